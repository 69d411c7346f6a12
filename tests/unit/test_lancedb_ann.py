"""The embedded store's ANN index and per-query search plan (rag.stores.lancedb_ann): the plan
is pure; the store builds IVF_SQ and, under every plan, returns only allowed rows, exactly the
brute-force top-k where it searches exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rag.config import StoreSettings
from rag.models import Chunk
from rag.stores import lancedb_ann
from rag.stores.base import IndexInfo
from rag.stores.counts import CountCache
from rag.stores.lancedb import LanceDBStore
from rag.stores.lancedb_ann import AnnPlan, partitions, plan
from tests.contract import make_chunk

DIM = 16
ROWS = 3_000
NARROW, MIDDLE = 40, 200  # rows readable by group:narrow, group:middle (the rest: group:all)


def test_partitions_grow_with_the_square_root_of_the_rows() -> None:
    assert [partitions(n) for n in (0, 1, 50_000, 1_000_000)] == [1, 1, 224, 1_000]


def test_an_acl_admitting_few_rows_is_searched_exactly() -> None:
    assert plan(2_000, 1_000_000, 256, 2_000) == AnnPlan(exact=True, nprobes=256)
    assert plan(0, 1_000_000, 256, 2_000).exact
    assert not plan(2_001, 1_000_000, 256, 2_000).exact
    assert not plan(1, 1_000_000, 256, 0).exact  # exact search off


def test_a_broad_acl_probes_nprobes_and_a_narrower_one_more() -> None:
    assert plan(1_000_000, 1_000_000, 256, 2_000).nprobes == 256
    assert plan(100_000, 1_000_000, 256, 2_000).nprobes == 256
    probes = [plan(n, 1_000_000, 256, 2_000).nprobes for n in (50_000, 10_000, 3_000)]
    assert probes == sorted(probes) and probes[0] > 256
    assert plan(10_000, 1_000_000, 256, 2_000).nprobes == 810  # 256 x sqrt(0.1 / 0.01)
    assert plan(3_000, 1_000_000, 256, 2_000).nprobes <= 4 * 1_000  # bounded


def test_counts_are_reused_for_their_ttl_and_the_cache_is_bounded() -> None:
    now = [0.0]
    calls: list[str | None] = []

    def count(clause: str | None) -> int:
        calls.append(clause)
        return 7 if clause else 100

    cache = CountCache(ttl=60.0, size=2, clock=lambda: now[0])
    assert (cache.count("a", count), cache.count(None, count)) == (7, 100)
    assert calls == ["a", None]
    now[0] = 59.0
    assert cache.count("a", count) == 7 and len(calls) == 2  # reused
    now[0] = 61.0
    cache.count("a", count)
    assert calls[-1] == "a" and len(calls) == 3  # expired: counted again
    cache.count("b", count)
    cache.count("c", count)  # "a" is the oldest: evicted
    cache.count("a", count)
    assert calls[-1] == "a" and len(calls) == 6


def _chunk(i: int) -> Chunk:
    group = (
        "group:narrow" if i < NARROW else "group:middle" if i < NARROW + MIDDLE else "group:other"
    )
    return make_chunk("d", i, f"chunk {i}", {group, "group:all"})


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Chunk], np.ndarray]:
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(ROWS, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    chunks = [_chunk(i) for i in range(ROWS)]
    path = tmp_path_factory.mktemp("ann") / "db"
    store = LanceDBStore(path, StoreSettings(ann_min_rows=1_000))
    store.ensure_index(IndexInfo("test", DIM))
    store.upsert(chunks, vectors)
    store.optimize()
    return path, chunks, vectors


def _exact(chunks: list[Chunk], vectors: np.ndarray, q: np.ndarray, group: str) -> list[str]:
    allowed = [i for i, c in enumerate(chunks) if c.acl.permits(frozenset({group}))]
    order = sorted(allowed, key=lambda i: -float(vectors[i] @ q))
    return [chunks[i].id for i in order[:10]]


@pytest.mark.slow  # builds a real index (make test runs it; make test-fast stays under 90 s)
def test_the_index_is_ivf_sq_with_sqrt_rows_partitions(
    indexed: tuple[Path, list[Chunk], np.ndarray],
) -> None:
    table = LanceDBStore(indexed[0], StoreSettings())._open_for_read()
    kinds = {i.index_type for i in table.list_indices() if "vector" in i.columns}
    assert kinds == {"IvfSq"}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("group", "settings", "exact"),
    [
        ("group:narrow", StoreSettings(ann_min_rows=1_000), True),  # 40 rows: exact search
        ("group:middle", StoreSettings(ann_min_rows=1_000, exact_max_rows=0, nprobes=1), False),
        ("group:all", StoreSettings(ann_min_rows=1_000, nprobes=1), False),
    ],
)
def test_every_plan_returns_only_allowed_rows_and_exact_search_the_true_top_k(
    indexed: tuple[Path, list[Chunk], np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
    group: str,
    settings: StoreSettings,
    exact: bool,
) -> None:
    path, chunks, vectors = indexed
    plans: list[AnnPlan] = []
    real = lancedb_ann.plan
    monkeypatch.setattr(lancedb_ann, "plan", lambda *a: plans.append(real(*a)) or plans[-1])
    store = LanceDBStore(path, settings)
    readable = {c.id for c in chunks if c.acl.permits(frozenset({group}))}
    for q in vectors[:20]:
        hits = store.search(q, frozenset({group}), 10)
        assert len(hits) == 10 and {h.chunk.id for h in hits} <= readable
        if exact:
            assert [h.chunk.id for h in hits] == _exact(chunks, vectors, q, group)
    assert plans and all(p.exact is exact for p in plans)
    if group == "group:middle":  # 200 of 3,000 rows (<10%): more than the one probe asked
        assert all(p.nprobes > 1 for p in plans)


@pytest.mark.slow
def test_optimize_rebuilds_a_single_graph_index_as_ivf_sq(tmp_path: Path) -> None:
    """Tables indexed before IVF_SQ (IVF_HNSW_SQ: one graph at LanceDB's default partitioning)
    get the new index on their next optimize; an IVF_SQ index is left alone."""
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(1_200, DIM)).astype(np.float32)
    store = LanceDBStore(tmp_path / "db", StoreSettings(ann_min_rows=1_000))
    store.ensure_index(IndexInfo("test", DIM))
    store.upsert([_chunk(i) for i in range(1_200)], vectors)
    table = store._require_table()
    table.create_index(metric="cosine", index_type="IVF_HNSW_SQ", replace=True)

    def vector_index() -> tuple[str, str]:
        (index,) = [i for i in table.list_indices() if "vector" in i.columns]
        return index.index_type, index.index_uuid

    assert vector_index()[0] == "IvfHnswSq"
    store.optimize()
    kind, uuid = vector_index()
    assert kind == "IvfSq"
    store.optimize()
    assert vector_index() == (kind, uuid)
    hits = store.search(vectors[0], frozenset({"group:narrow"}), 10)
    assert len(hits) == 10 and {h.chunk.id for h in hits} <= {_chunk(i).id for i in range(NARROW)}
