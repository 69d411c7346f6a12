"""A self-hosted reranker speaking the text-embeddings-inference ``/rerank`` API (a TEI container
with a cross-encoder, e.g. on a GPU or inf2 host, or ``rag serve-embeddings --reranker``).

``POST /rerank {"query", "texts", "raw_scores", "return_text": false, "truncate": true}`` answers
``[{"index", "score"}]``. A server takes at most ``max_client_batch_size`` texts per request
(TEI's default: 32), so longer lists go in batches, concurrently under the embedders' adaptive
limiter and retries, and are ranked together (a cross-encoder scores each pair on its own).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import orjson

from rag.embeddings.resilience import (
    AdaptiveConcurrency,
    ResilientCaller,
    ThrottledError,
    TransientError,
)
from rag.errors import EmbeddingError
from rag.rerank import Ranking, checked_ranking


class TEIReranker:
    def __init__(
        self,
        base_url: str,
        *,
        model_name: str = "reranker",
        batch_size: int = 32,
        timeout_seconds: float = 30.0,
        max_concurrency: int = 8,
        raw_scores: bool = False,
        caller: ResilientCaller | None = None,
        client: Any = None,
    ) -> None:
        self._url = base_url.rstrip("/")
        self._name = model_name
        self._batch = batch_size
        self._timeout = timeout_seconds
        self._max_concurrency = max_concurrency
        self._raw = raw_scores
        self._client: Any = client  # an httpx.Client; built on first use when not given
        self._lock = threading.Lock()
        self.caller = caller or ResilientCaller(
            AdaptiveConcurrency(min(4, max_concurrency), 1, max_concurrency)
        )
        self.calls = 0

    @property
    def model_id(self) -> str:
        return f"tei/{self._name}"

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                import httpx

                limits = httpx.Limits(max_connections=self._max_concurrency)
                self._client = httpx.Client(timeout=self._timeout, limits=limits)
            return self._client

    def request(self, query: str, texts: Sequence[str]) -> dict[str, Any]:
        """The JSON body of one ``/rerank`` request."""
        return {
            "query": query or " ",
            "texts": [t or " " for t in texts],
            "raw_scores": self._raw,
            "return_text": False,
            "truncate": True,
        }

    def rerank(self, query: str, texts: Sequence[str], top_n: int | None = None) -> Ranking:
        if not texts:
            return []
        starts = list(range(0, len(texts), self._batch))
        parts = self.caller.map(
            lambda start: self._call(query, list(texts[start : start + self._batch])), starts
        )
        pairs = [(start + i, s) for start, part in zip(starts, parts, strict=True) for i, s in part]
        return checked_ranking(pairs, len(texts), top_n)

    def _call(self, query: str, texts: list[str]) -> list[tuple[int, float]]:
        import httpx

        try:
            response = self.client.post(f"{self._url}/rerank", json=self.request(query, texts))
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise TransientError(f"rerank server: {exc}") from exc
        if response.status_code == 429:
            raise ThrottledError("rerank server is overloaded (429)")
        if response.status_code >= 500:
            raise TransientError(f"rerank server: HTTP {response.status_code}")
        if response.status_code >= 400:  # 413 too many texts, 422 invalid, 424 not a reranker
            raise EmbeddingError(
                f"rerank server: HTTP {response.status_code}: {response.text[:200]}"
            )
        try:
            payload = orjson.loads(response.content)
            pairs = [(r["index"], float(r["score"])) for r in payload]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise EmbeddingError(f"malformed rerank response: {exc}") from exc
        checked_ranking(pairs, len(texts), None)  # a batch answers for each of its texts once
        if len(pairs) != len(texts):
            raise EmbeddingError(f"rerank server scored {len(pairs)} of {len(texts)} texts")
        with self._lock:
            self.calls += 1
        return pairs
