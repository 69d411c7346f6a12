"""Amazon Bedrock embeddings over ``bedrock-runtime`` ``InvokeModel``.

Titan Text Embeddings v2 takes one text per call (dimensions 256/512/1024, optional
normalization); Cohere Embed takes up to 96 texts per call with an ``input_type`` for documents
and queries. Calls run through adaptive concurrency, a circuit breaker and retries; inputs over a
model's limit are truncated (and counted) rather than failing the batch.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from typing import Any, Final, Literal

import numpy as np

from rag.embeddings.aws import make_client, translate
from rag.embeddings.base import InputKind, Vectors, normalize
from rag.embeddings.resilience import AdaptiveConcurrency, ResilientCaller
from rag.errors import ConfigurationError, EmbeddingError

log = logging.getLogger(__name__)

Family = Literal["titan", "cohere"]
COHERE_BATCH: Final = 96
# the models' input limits, in characters (a conservative proxy for their token limits)
MAX_CHARS: Final[dict[Family, int]] = {"titan": 50_000, "cohere": 2_048}
COHERE_DIMENSIONS: Final = 1024


def family_of(model_id: str) -> Family:
    if "titan-embed-text" in model_id:
        return "titan"
    if "cohere.embed" in model_id:
        return "cohere"
    raise ConfigurationError(f"unsupported Bedrock embedding model {model_id!r}")


class BedrockEmbedder:
    """Embeddings from a Bedrock model; the boto3 client is created on first use, unless one is
    given (``client``: e.g. one with other retry settings; its region and endpoint then apply)."""

    def __init__(
        self,
        model_id: str = "amazon.titan-embed-text-v2:0",
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        dimensions: int = 1024,
        normalize: bool = True,
        timeout_seconds: float = 30.0,
        caller: ResilientCaller | None = None,
        max_concurrency: int = 32,
        client: Any = None,
    ) -> None:
        self._model = model_id
        self._family = family_of(model_id)
        if self._family == "titan" and dimensions not in (256, 512, 1024):
            raise ConfigurationError("Titan v2 dimensions must be 256, 512 or 1024")
        self._dimensions = dimensions if self._family == "titan" else COHERE_DIMENSIONS
        self._normalize = normalize
        self._region = region
        self._endpoint = endpoint_url
        self._timeout = timeout_seconds
        self._max_concurrency = max_concurrency
        self._client: Any = client
        self._lock = threading.Lock()
        self.caller = caller or ResilientCaller(AdaptiveConcurrency(4, 1, max_concurrency))
        self.tokens_reported = 0
        self.truncated = 0

    @property
    def model_id(self) -> str:
        suffix = f"@{self._dimensions}" if self._family == "titan" else ""
        return f"bedrock/{self._model}{suffix}"

    @property
    def dimension(self) -> int:
        return self._dimensions

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = make_client(
                    "bedrock-runtime",
                    self._region,
                    self._endpoint,
                    self._timeout,
                    self._max_concurrency,
                )
            return self._client

    def embed_batch(self, texts: Sequence[str], *, kind: InputKind = "document") -> Vectors:
        if not texts:
            return np.zeros((0, self._dimensions), dtype=np.float32)
        texts = [self._fit(t) for t in texts]
        if self._family == "titan":
            rows = self.caller.map(self._titan, texts)
        else:
            batches = [texts[i : i + COHERE_BATCH] for i in range(0, len(texts), COHERE_BATCH)]
            rows = [
                row
                for batch in self.caller.map(lambda b: self._cohere(b, kind), batches)
                for row in batch
            ]
        vectors = np.asarray(rows, dtype=np.float32)
        return normalize(vectors) if self._normalize else vectors

    def _fit(self, text: str) -> str:
        limit = MAX_CHARS[self._family]
        if len(text) <= limit:
            return text or " "
        with self._lock:
            self.truncated += 1
        log.warning("input of %d characters truncated to %d for %s", len(text), limit, self._model)
        return text[:limit]

    def request_body(self, texts: Sequence[str], kind: InputKind) -> dict[str, Any]:
        """The InvokeModel body for one call (one text for Titan, up to 96 for Cohere)."""
        if self._family == "titan":
            (text,) = texts
            return {"inputText": text, "dimensions": self._dimensions, "normalize": self._normalize}
        return {
            "texts": list(texts),
            "truncate": "END",
            "input_type": "search_query" if kind == "query" else "search_document",
        }

    def _invoke(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self.client.invoke_model(
                modelId=self._model,
                body=json.dumps(body),
                contentType="application/json",
                accept="application/json",
            )
            payload = json.loads(response["body"].read())
        except Exception as exc:
            raise translate(exc, f"Bedrock InvokeModel {self._model}") from exc
        if not isinstance(payload, dict):
            raise EmbeddingError(f"unexpected Bedrock response: {str(payload)[:200]}")
        return payload

    def _titan(self, text: str) -> list[float]:
        payload = self._invoke(self.request_body([text], "document"))
        with self._lock:
            self.tokens_reported += int(payload.get("inputTextTokenCount", 0))
        vector = payload.get("embedding")
        if not isinstance(vector, list) or len(vector) != self._dimensions:
            raise EmbeddingError(f"Titan returned no {self._dimensions}-d embedding")
        return vector

    def _cohere(self, texts: Sequence[str], kind: InputKind) -> list[list[float]]:
        payload = self._invoke(self.request_body(texts, kind))
        embeddings = payload.get("embeddings")
        if isinstance(embeddings, dict):  # embedding_types responses: {"float": [...]}
            embeddings = embeddings.get("float")
        if not isinstance(embeddings, list) or len(embeddings) != len(texts):
            raise EmbeddingError(
                f"Cohere returned {len(embeddings or [])} embeddings for {len(texts)} texts"
            )
        billed = payload.get("meta", {}).get("billed_units", {}).get("input_tokens")
        if billed is not None:
            with self._lock:
                self.tokens_reported += int(billed)
        return embeddings
