"""A self-hosted embedding server speaking the text-embeddings-inference HTTP API
(``POST /embed``), e.g. on EC2/EKS inf2 instances, or ``rag serve-embeddings``."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from rag.embeddings.base import InputKind, Vectors, normalize
from rag.embeddings.resilience import (
    AdaptiveConcurrency,
    ResilientCaller,
    ThrottledError,
    TransientError,
)
from rag.errors import EmbeddingError


class TEIEmbedder:
    def __init__(
        self,
        base_url: str,
        dimension: int,
        *,
        model_name: str = "tei",
        batch_size: int = 32,
        timeout_seconds: float = 30.0,
        max_concurrency: int = 16,
        caller: ResilientCaller | None = None,
    ) -> None:
        self._url = base_url.rstrip("/")
        self._dimension = dimension
        self._name = model_name
        self._batch = batch_size
        self._timeout = timeout_seconds
        self._max_concurrency = max_concurrency
        self._client: Any = None
        self._lock = threading.Lock()
        self.caller = caller or ResilientCaller(AdaptiveConcurrency(4, 1, max_concurrency))

    @property
    def model_id(self) -> str:
        return f"tei/{self._name}"

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def client(self) -> Any:
        import httpx

        with self._lock:
            if self._client is None:
                limits = httpx.Limits(max_connections=self._max_concurrency)
                self._client = httpx.Client(timeout=self._timeout, limits=limits)
            return self._client

    def embed_batch(self, texts: Sequence[str], *, kind: InputKind = "document") -> Vectors:
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        batches = [list(texts[i : i + self._batch]) for i in range(0, len(texts), self._batch)]
        return normalize(np.concatenate(self.caller.map(self._call, batches)))

    def _call(self, texts: list[str]) -> Vectors:
        import httpx

        try:
            response = self.client.post(
                f"{self._url}/embed", json={"inputs": texts, "normalize": True, "truncate": True}
            )
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise TransientError(f"embedding server: {exc}") from exc
        if response.status_code == 429:
            raise ThrottledError("embedding server is overloaded (429)")
        if response.status_code >= 500:
            raise TransientError(f"embedding server: HTTP {response.status_code}")
        if response.status_code >= 400:
            raise EmbeddingError(
                f"embedding server: HTTP {response.status_code}: {response.text[:200]}"
            )
        array = np.asarray(orjson.loads(response.content), dtype=np.float32)
        if array.shape != (len(texts), self._dimension):
            raise EmbeddingError(f"embedding server returned shape {array.shape}")
        return array
