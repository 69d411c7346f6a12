"""A self-hosted embedding server speaking the text-embeddings-inference HTTP API
(``POST /embed``), e.g. on EC2/EKS inf2 instances, or ``rag serve-embeddings``."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from rag.embeddings.base import Vectors
from rag.embeddings.remote import BatchedRemoteEmbedder
from rag.embeddings.resilience import ResilientCaller, ThrottledError, TransientError
from rag.errors import EmbeddingError


class TEIEmbedder(BatchedRemoteEmbedder):
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
        super().__init__(
            dimension,
            batch_size=batch_size,
            timeout_seconds=timeout_seconds,
            max_concurrency=max_concurrency,
            caller=caller,
        )
        self._url = base_url.rstrip("/")
        self._name = model_name

    @property
    def model_id(self) -> str:
        return f"tei/{self._name}"

    def _make_client(self) -> Any:
        import httpx

        limits = httpx.Limits(max_connections=self._max_concurrency)
        return httpx.Client(timeout=self._timeout, limits=limits)

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
