"""The Embedder protocol and the conveniences built on it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from rag.errors import EmbeddingError

InputKind = Literal["document", "query"]
Vectors = NDArray[np.float32]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-length vectors. One method; batching comes from the helpers."""

    @property
    def model_id(self) -> str:
        """Identifies model and revision; recorded with the index and checked on every use."""
        ...

    @property
    def dimension(self) -> int: ...

    def embed_batch(self, texts: Sequence[str], *, kind: InputKind = "document") -> Vectors:
        """Embed one batch; returns a float32 array of shape (len(texts), dimension)."""
        ...


@dataclass
class EmbeddingStats:
    """What embedding cost: calls to the backend and texts embedded."""

    calls: int = 0
    texts: int = 0


def embed_query(embedder: Embedder, text: str) -> Vectors:
    """One query vector, shape (dimension,)."""
    vectors = embedder.embed_batch([text], kind="query")
    _check_shape(embedder, vectors, 1)
    return np.asarray(vectors[0], dtype=np.float32)


def embed_in_batches(
    embedder: Embedder,
    texts: Sequence[str],
    batch_size: int,
    stats: EmbeddingStats | None = None,
) -> Vectors:
    """Embed many texts in batches of ``batch_size``; counts calls into ``stats``."""
    if not texts:
        return np.zeros((0, embedder.dimension), dtype=np.float32)
    parts: list[Vectors] = []
    for start in range(0, len(texts), batch_size):
        batch = texts[start : start + batch_size]
        vectors = embedder.embed_batch(batch, kind="document")
        _check_shape(embedder, vectors, len(batch))
        parts.append(vectors)
        if stats is not None:
            stats.calls += 1
            stats.texts += len(batch)
    return np.concatenate(parts).astype(np.float32, copy=False)


def _check_shape(embedder: Embedder, vectors: Vectors, rows: int) -> None:
    if vectors.shape != (rows, embedder.dimension):
        raise EmbeddingError(
            f"{embedder.model_id} returned shape {vectors.shape}, "
            f"expected ({rows}, {embedder.dimension})"
        )


def normalize(vectors: NDArray[np.floating]) -> Vectors:
    """Scale rows to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    out: Vectors = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    return out
