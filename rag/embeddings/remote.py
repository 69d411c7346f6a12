"""What the batched remote embedders (SageMaker endpoints, TEI servers) share: batching through
the resilient caller, normalization, and a lazily created client."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from rag.embeddings.base import InputKind, Vectors, normalize
from rag.embeddings.resilience import AdaptiveConcurrency, ResilientCaller


class BatchedRemoteEmbedder:
    """Subclasses implement ``_make_client()`` and ``_call(texts) -> Vectors`` for one batch."""

    def __init__(
        self,
        dimension: int,
        *,
        batch_size: int,
        timeout_seconds: float,
        max_concurrency: int,
        caller: ResilientCaller | None,
        initial_concurrency: int = 4,
    ) -> None:
        self._dimension = dimension
        self._batch = batch_size
        self._timeout = timeout_seconds
        self._max_concurrency = max_concurrency
        self._client: Any = None
        self._lock = threading.Lock()
        limiter = AdaptiveConcurrency(min(initial_concurrency, max_concurrency), 1, max_concurrency)
        self.caller = caller or ResilientCaller(limiter)

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> Any:
        raise NotImplementedError

    def _call(self, texts: list[str]) -> Vectors:
        raise NotImplementedError

    def embed_batch(self, texts: Sequence[str], *, kind: InputKind = "document") -> Vectors:
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        batches = [list(texts[i : i + self._batch]) for i in range(0, len(texts), self._batch)]
        return normalize(np.concatenate(self.caller.map(self._call, batches)))
