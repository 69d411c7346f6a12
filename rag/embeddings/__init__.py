"""Embedding backends, one per module, behind the :class:`Embedder` protocol."""

from __future__ import annotations

from rag.config import EmbeddingSettings
from rag.embeddings.base import (
    Embedder,
    EmbeddingStats,
    Vectors,
    embed_in_batches,
    embed_query,
    normalize,
)

__all__ = [
    "Embedder",
    "EmbeddingStats",
    "Vectors",
    "build_embedder",
    "embed_in_batches",
    "embed_query",
    "normalize",
]


def build_embedder(settings: EmbeddingSettings) -> Embedder:
    """The embedder the settings name. Construction does no I/O; models load on first use."""
    if settings.provider == "hash":
        from rag.embeddings.hashing import HashEmbedder

        return HashEmbedder(settings.hash_dimension)
    from rag.embeddings.minilm import MiniLMEmbedder

    return MiniLMEmbedder(settings.max_sequence_tokens, settings.threads)
