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


def test_batched_writes_make_the_same_calls_and_commit_once(tmp_path: Path) -> None:
    from rag.embeddings.cache import batched_writes

    path = tmp_path / "c.sqlite"
    plain_inner, batched_inner = Counting(), Counting()
    plain = CachedEmbedder(plain_inner, tmp_path / "plain.sqlite")
    batched = CachedEmbedder(batched_inner, path)
    windows = [["a", "b"], ["b", "c"], ["a", "d"]]
    expected = [plain.embed_batch(w) for w in windows]
    with batched_writes(batched):
        got = [batched.embed_batch(w) for w in windows]
        assert CachedEmbedder(Counting(), path).missing(["a"]) == [0]  # not written yet
    assert batched_inner.batches == plain_inner.batches == [["a", "b"], ["c"], ["d"]]
    assert all(np.array_equal(g, e) for g, e in zip(got, expected, strict=True))
    assert (batched.hits, batched.misses) == (plain.hits, plain.misses) == (2, 4)
    later = Counting()
    again = CachedEmbedder(later, path).embed_batch(["a", "b", "c", "d"])
    assert later.batches == []  # all four written at the end of the block
    assert np.array_equal(again[3], expected[2][1])


def test_batched_writes_keep_what_was_embedded_before_a_failure(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    cached = CachedEmbedder(Counting(), path)
    try:
        with cached.batched_writes():
            cached.embed_batch(["a"])
            raise RuntimeError("the provider failed")
    except RuntimeError:
        pass
    assert CachedEmbedder(Counting(), path).missing(["a", "b"]) == [1]


def test_batched_writes_of_an_uncached_embedder_do_nothing() -> None:
    from rag.embeddings.cache import batched_writes

    inner = Counting()
    with batched_writes(inner):
        inner.embed_batch(["a"])
    assert inner.batches == [["a"]]
