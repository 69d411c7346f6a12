"""A self-hosted model (e.g. on Inferentia2) behind a SageMaker real-time endpoint, over
``sagemaker-runtime`` ``InvokeEndpoint``, with the JSON shapes of the common containers:

- ``tei``: Hugging Face text-embeddings-inference: ``{"inputs": [...]}`` -> ``[[...], ...]``
- ``hf``: the Hugging Face inference toolkit (feature extraction): ``{"inputs": [...]}`` ->
  pooled ``[[...]]`` or token-level ``[[[...]]]`` (mean-pooled here)
- ``jumpstart``: JumpStart text embedding: ``{"text_inputs": [...]}`` -> ``{"embedding": [...]}``
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from rag.embeddings.aws import make_client, translate
from rag.embeddings.base import Vectors
from rag.embeddings.remote import BatchedRemoteEmbedder
from rag.embeddings.resilience import ResilientCaller
from rag.errors import EmbeddingError

Shape = Literal["tei", "hf", "jumpstart"]


class SageMakerEmbedder(BatchedRemoteEmbedder):
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
        super().__init__(
            dimension,
            batch_size=batch_size,
            timeout_seconds=timeout_seconds,
            max_concurrency=max_concurrency,
            caller=caller,
            initial_concurrency=2,
        )
        self._endpoint = endpoint_name
        self._shape = shape
        self._name = model_name or endpoint_name
        self._region = region
        self._endpoint_url = endpoint_url

    @property
    def model_id(self) -> str:
        return f"sagemaker/{self._name}"

    def _make_client(self) -> Any:
        return make_client(
            "sagemaker-runtime",
            self._region,
            self._endpoint_url,
            self._timeout,
            self._max_concurrency,
        )

    def request_body(self, texts: Sequence[str]) -> dict[str, Any]:
        if self._shape == "jumpstart":
            return {"text_inputs": list(texts)}
        if self._shape == "tei":
            return {"inputs": list(texts), "truncate": True}
        return {"inputs": list(texts)}

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
