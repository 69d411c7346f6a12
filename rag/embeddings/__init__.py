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
from rag.errors import ConfigurationError

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
    if settings.provider == "bedrock":
        from rag.embeddings.bedrock import BedrockEmbedder

        b = settings.bedrock
        return BedrockEmbedder(
            b.model_id,
            region=b.region,
            endpoint_url=b.endpoint_url,
            dimensions=b.dimensions,
            normalize=b.normalize,
            timeout_seconds=b.timeout_seconds,
            max_concurrency=b.max_concurrency,
        )
    if settings.provider == "sagemaker":
        from rag.embeddings.sagemaker import SageMakerEmbedder

        sm = settings.sagemaker
        if not sm.endpoint_name:
            raise ConfigurationError("embedding.sagemaker.endpoint_name is required")
        return SageMakerEmbedder(
            sm.endpoint_name,
            sm.dimension,
            shape=sm.shape,
            model_name=sm.model_name,
            region=sm.region,
            endpoint_url=sm.endpoint_url,
            batch_size=sm.batch_size,
            max_concurrency=sm.max_concurrency,
        )
    if settings.provider == "tei":
        from rag.embeddings.tei import TEIEmbedder

        t = settings.tei
        return TEIEmbedder(
            t.url,
            t.dimension,
            model_name=t.model_name,
            batch_size=t.batch_size,
            max_concurrency=t.max_concurrency,
        )
    from rag.embeddings.minilm import MiniLMEmbedder

    return MiniLMEmbedder(settings.max_sequence_tokens, settings.threads)
