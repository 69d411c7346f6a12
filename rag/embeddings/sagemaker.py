"""A self-hosted model (e.g. on Inferentia2) behind a SageMaker real-time endpoint, over
``sagemaker-runtime`` ``InvokeEndpoint``, with the JSON shapes of the common containers:

- ``tei``: Hugging Face text-embeddings-inference: ``{"inputs": [...]}`` -> ``[[...], ...]``
- ``hf``: the Hugging Face inference toolkit (feature extraction): ``{"inputs": [...]}`` ->
  pooled ``[[...]]`` or token-level ``[[[...]]]`` (mean-pooled here)
- ``jumpstart``: JumpStart text embedding: ``{"text_inputs": [...]}`` -> ``{"embedding": [...]}``
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from rag.embeddings.aws import make_client, translate
from rag.embeddings.base import InputKind, Vectors, normalize
from rag.embeddings.resilience import AdaptiveConcurrency, ResilientCaller
from rag.errors import EmbeddingError

Shape = Literal["tei", "hf", "jumpstart"]


class SageMakerEmbedder:
    def __init__(
        self,
        endpoint_name: str,
        dimension: int,
        *,
        shape: Shape = "tei",
        model_name: str | None = None,
        region: str | None = None,
        endpoint_url: str | None = None,
        batch_size: int = 32,
        timeout_seconds: float = 60.0,
        max_concurrency: int = 16,
        caller: ResilientCaller | None = None,
    ) -> None:
        self._endpoint = endpoint_name
        self._dimension = dimension
        self._shape = shape
        self._name = model_name or endpoint_name
        self._region = region
        self._endpoint_url = endpoint_url
        self._batch = batch_size
        self._timeout = timeout_seconds
        self._max_concurrency = max_concurrency
        self._client: Any = None
        self._lock = threading.Lock()
        self.caller = caller or ResilientCaller(AdaptiveConcurrency(2, 1, max_concurrency))

    @property
    def model_id(self) -> str:
        return f"sagemaker/{self._name}"

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = make_client(
                    "sagemaker-runtime",
                    self._region,
                    self._endpoint_url,
                    self._timeout,
                    self._max_concurrency,
                )
            return self._client

    def request_body(self, texts: Sequence[str]) -> dict[str, Any]:
        if self._shape == "jumpstart":
            return {"text_inputs": list(texts)}
        if self._shape == "tei":
            return {"inputs": list(texts), "truncate": True}
        return {"inputs": list(texts)}

    def embed_batch(self, texts: Sequence[str], *, kind: InputKind = "document") -> Vectors:
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        batches = [list(texts[i : i + self._batch]) for i in range(0, len(texts), self._batch)]
        parts = self.caller.map(self._call, batches)
        return normalize(np.concatenate(parts))

    def _call(self, texts: list[str]) -> Vectors:
        try:
            response = self.client.invoke_endpoint(
                EndpointName=self._endpoint,
                ContentType="application/json",
                Accept="application/json",
                Body=json.dumps(self.request_body(texts)),
            )
            payload = json.loads(response["Body"].read())
        except Exception as exc:
            raise translate(exc, f"SageMaker InvokeEndpoint {self._endpoint}") from exc
        return self._parse(payload, len(texts))

    def _parse(self, payload: Any, rows: int) -> Vectors:
        if self._shape == "jumpstart":
            payload = payload.get("embedding") if isinstance(payload, dict) else None
        array = np.asarray(payload, dtype=np.float32) if payload is not None else None
        if array is not None and array.ndim == 3:  # token embeddings: mean-pool
            array = array.mean(axis=1)
        if array is None or array.shape != (rows, self._dimension):
            shape = None if array is None else array.shape
            raise EmbeddingError(
                f"endpoint {self._endpoint} returned shape {shape}, "
                f"expected ({rows}, {self._dimension})"
            )
        return array
