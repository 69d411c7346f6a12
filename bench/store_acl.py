"""Embedded store (LanceDB) under ACL filters: recall@10 against the exact top-10 over the
allowed set, and p50/p95 latency, unfiltered and at allowed shares of 100% down to 0.01%.

Baseline: the same search with no filter at all ("none"), measured in the same run.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import DIM, SHARES, Corpus, K, header, label, line, measure
from bench.common import corpus as make_corpus
from rag.config import StoreSettings
from rag.identity import PUBLIC
from rag.stores.base import IndexInfo
from rag.stores.lancedb import LanceDBStore


def _load(path: Path, corpus: Corpus, settings: StoreSettings) -> LanceDBStore:
    store = LanceDBStore(path, settings)
    store.ensure_index(IndexInfo("bench", DIM))
    step = 20_000
    for start in range(0, len(corpus.chunks), step):
        store.upsert(corpus.chunks[start : start + step], corpus.vectors[start : start + step])
    store.optimize()
    return store


def _table(title: str, store: LanceDBStore, corpus: Corpus, settings: StoreSettings) -> None:
    table = store._require_table()

    def unfiltered(q: np.ndarray) -> list[str]:
        query = table.search(q, vector_column_name="vector").distance_type("cosine")
        if settings.ann_min_rows:
            query = query.nprobes(settings.nprobes).refine_factor(settings.refine_factor)
        return list(query.select(["id", "_distance"]).limit(K).to_arrow().column("id").to_pylist())

    def filtered(share: float):  # type: ignore[no-untyped-def]
        principals = frozenset({"user:bench", PUBLIC, label(share)})
        return lambda q: [h.chunk.id for h in store.search(q, principals, K)]

    for q in corpus.queries[:10]:  # warm-up
        unfiltered(q)
        filtered(1.0)(q)
    base = measure(corpus, 1.0, unfiltered)
    print(f"\n{title}\n{header()}")
    print(line("none", base, base))
    for share in SHARES:
        print(line(f"{share:.2%}", measure(corpus, share, filtered(share)), base))


def run(rows: int, queries: int, ann: bool, data: str = "scifact") -> None:
    corpus = make_corpus(data, rows, queries)
    print(
        f"== LanceDB store: {rows:,} chunks x {DIM} dims ({data} data), {queries} queries per "
        f"row, k={K}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        settings = StoreSettings()
        start = time.perf_counter()
        store = _load(Path(tmp) / "flat", corpus, settings)
        print(f"load + label indexes: {time.perf_counter() - start:.1f} s")
        _table(
            "exact search (no vector index; the default below ann_min_rows)",
            store,
            corpus,
            settings,
        )
        if ann:
            settings = StoreSettings(ann_min_rows=1)
            start = time.perf_counter()
            store = _load(Path(tmp) / "ann", corpus, settings)
            print(f"\nload + IVF_HNSW_SQ index: {time.perf_counter() - start:.1f} s")
            _table(
                f"ANN search (IVF_HNSW_SQ, nprobes={settings.nprobes}, "
                f"refine_factor={settings.refine_factor})",
                store,
                corpus,
                settings,
            )
