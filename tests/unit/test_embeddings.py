from __future__ import annotations

import numpy as np
import pytest

from rag.config import EmbeddingSettings
from rag.embeddings import EmbeddingStats, build_embedder, embed_in_batches, embed_query
from rag.embeddings.hashing import HashEmbedder
from rag.embeddings.minilm import MiniLMEmbedder


def test_hash_embedder_is_deterministic_and_unit_length() -> None:
    e = HashEmbedder(64)
    a, b = e.embed_batch(["hello world", "hello world"])
    assert np.array_equal(a, b)
    assert np.linalg.norm(a) == pytest.approx(1.0, abs=1e-6)


def test_batches_are_counted() -> None:
    stats = EmbeddingStats()
    vectors = embed_in_batches(HashEmbedder(8), [f"t{i}" for i in range(10)], 4, stats)
    assert vectors.shape == (10, 8)
    assert (stats.calls, stats.texts) == (3, 10)


def test_construction_loads_nothing() -> None:
    embedder = build_embedder(EmbeddingSettings())
    assert isinstance(embedder, MiniLMEmbedder)
    assert embedder._session is None


def test_minilm_is_a_semantic_model() -> None:
    e = MiniLMEmbedder()
    cat, feline, revenue = e.embed_batch(
        ["The cat sat on the mat.", "A feline rested on a rug.", "Quarterly revenue grew by 10%."]
    )
    assert float(cat @ feline) > 0.4 > float(cat @ revenue)
    assert e.dimension == 384 and cat.dtype == np.float32
    assert np.linalg.norm(cat) == pytest.approx(1.0, abs=1e-5)


def test_minilm_order_and_padding_do_not_change_vectors() -> None:
    e = MiniLMEmbedder()
    texts = ["short", "a much longer sentence with many more words in it than the other"]
    together = e.embed_batch(texts)
    alone = np.stack([embed_query(e, t) for t in texts])
    assert np.allclose(together, alone, atol=1e-5)
    assert np.allclose(e.embed_batch(texts[::-1])[::-1], together, atol=1e-5)
