"""A sentence-transformers model directory run with PyTorch, on CUDA when present.

For GPU hosts (or AWS Inferentia2 with torch-neuronx, see the README): the same model as the
offline default, served by ``rag serve-embeddings --model-dir DIR``. Needs the optional
``sentence-transformers`` package (and torch); the default install stays torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag.embeddings.base import InputKind, Vectors
from rag.errors import ConfigurationError, EmbeddingError


class SentenceTransformerEmbedder:
    def __init__(
        self,
        model_dir: Path,
        device: str = "auto",
        batch_size: int = 128,
        model_id: str | None = None,
        half: bool = True,
    ) -> None:
        self._dir = Path(model_dir)
        self._device = device
        self._batch = batch_size
        self._model_id = model_id or f"sentence-transformers/{self._dir.name}"
        self._half = half
        self._model: Any = None
        self._dimension: int | None = None

    def _load(self) -> Any:
        if self._model is None:
            try:
                import torch
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise ConfigurationError(
                    "install sentence-transformers (and torch) to run a model directory"
                ) from exc
            device = self._device
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            model = SentenceTransformer(str(self._dir), device=device)
            if device.startswith("cuda") and self._half:
                model = model.half()
            self._model = model
            self._dimension = int(model.get_sentence_embedding_dimension())
        return self._model

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self._load()
        assert self._dimension is not None
        return self._dimension

    @property
    def device(self) -> str:
        return str(self._load().device)

    def embed_batch(self, texts: Sequence[str], *, kind: InputKind = "document") -> Vectors:
        model = self._load()
        try:
            vectors = model.encode(
                list(texts),
                batch_size=self._batch,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        except Exception as exc:  # torch raises its own errors
            raise EmbeddingError(f"sentence-transformers failed: {exc}") from exc
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)
