from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rag.embeddings.base import InputKind, Vectors
from rag.embeddings.cache import CachedEmbedder
from rag.embeddings.hashing import HashEmbedder


class Counting(HashEmbedder):
    def __init__(self) -> None:
        super().__init__(16)
        self.batches: list[list[str]] = []

    def embed_batch(self, texts: Sequence[str], *, kind: InputKind = "document") -> Vectors:
        self.batches.append(list(texts))
        return super().embed_batch(texts, kind=kind)


def test_unchanged_text_is_never_embedded_twice(tmp_path: Path) -> None:
    inner = Counting()
    cached = CachedEmbedder(inner, tmp_path / "cache.sqlite")
    first = cached.embed_batch(["a", "b", "c"])
    second = cached.embed_batch(["b", "d", "a"])
    assert inner.batches == [["a", "b", "c"], ["d"]]
    assert np.array_equal(second[0], first[1])
    assert np.array_equal(second[2], first[0])
    assert (cached.hits, cached.misses) == (2, 4)


def test_cache_survives_processes_and_separates_models(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    CachedEmbedder(Counting(), path).embed_batch(["x"])
    again = Counting()
    CachedEmbedder(again, path).embed_batch(["x"])
    assert again.batches == []
    other = HashEmbedder(32)
    assert CachedEmbedder(other, path).embed_batch(["x"]).shape == (1, 32)


def test_queries_and_documents_are_cached_apart(tmp_path: Path) -> None:
    inner = Counting()
    cached = CachedEmbedder(inner, tmp_path / "c.sqlite")
    cached.embed_batch(["x"], kind="document")
    cached.embed_batch(["x"], kind="query")
    assert len(inner.batches) == 2
