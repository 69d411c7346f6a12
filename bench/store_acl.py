"""Embedded store (LanceDB) under ACL filters: recall@10 against the exact top-10 over the
allowed set, and p50/p95 latency, unfiltered and at allowed shares of 100% down to 0.01%; the
bulk load rate through the store's own upsert, the index build time (``optimize``: ACL label
lists, BM25, and IVF_SQ from ``ann_min_rows`` rows), RSS and the size on disk.

Baseline: the same search with no filter at all ("none"), measured in the same run.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from bench.common import (
    BASE,
    DIM,
    SHARES,
    Corpus,
    K,
    dir_mib,
    header,
    label,
    line,
    measure_all,
    rss_mib,
    share_truth,
)
from bench.common import corpus as make_corpus
from rag.config import StoreSettings
from rag.identity import PUBLIC
from rag.stores.base import IndexInfo
from rag.stores.lancedb import LanceDBStore

STEP = 20_000  # chunks per upsert


def load(path: Path, corpus: Corpus, settings: StoreSettings) -> LanceDBStore:
    """The store at ``path`` holding ``corpus`` (loaded and optimized unless already there)."""
    store = LanceDBStore(path, settings)
    if store.index_info() is not None and store.count() == corpus.rows:
        print(f"reusing the loaded table at {path} ({corpus.rows:,} chunks)")
        return store
    store.ensure_index(IndexInfo("bench", DIM))
    start = time.perf_counter()
    for i in range(0, corpus.rows, STEP):
        store.upsert(corpus.chunks(i, i + STEP), corpus.vectors[i : i + STEP])
    loaded = time.perf_counter() - start
    print(
        f"bulk load (upsert, {STEP:,} per call): {loaded:.1f} s = "
        f"{corpus.rows / loaded:,.0f} chunks/s",
        flush=True,
    )
    start = time.perf_counter()
    store.optimize()
    built = time.perf_counter() - start
    indexes = sorted(
        f"{i.index_type}({','.join(i.columns)})" for i in store._require_table().list_indices()
    )
    print(
        f"index build (optimize: {', '.join(indexes)}): {built:.1f} s; "
        f"on disk {dir_mib(path):,.0f} MiB",
        flush=True,
    )
    return store


def searchers(
    store: LanceDBStore, settings: StoreSettings
) -> tuple[Callable[[np.ndarray], list[str]], Callable[[float], Callable[[np.ndarray], list[str]]]]:
    table = store._require_table()
    ann = bool(settings.ann_min_rows) and any("vector" in i.columns for i in table.list_indices())

    def unfiltered(q: np.ndarray) -> list[str]:
        query = table.search(q, vector_column_name="vector").distance_type("cosine")
        if ann:
            query = query.nprobes(settings.nprobes).refine_factor(settings.refine_factor)
        return list(query.select(["id", "_distance"]).limit(K).to_arrow().column("id").to_pylist())

    def filtered(share: float) -> Callable[[np.ndarray], list[str]]:
        principals = frozenset({"user:bench", PUBLIC, label(share)})
        return lambda q: [h.chunk.id for h in store.search(q, principals, K)]

    return unfiltered, filtered


def table(title: str, store: LanceDBStore, corpus: Corpus, settings: StoreSettings) -> None:
    unfiltered, filtered = searchers(store, settings)
    for q in corpus.queries[:10]:  # warm-up
        unfiltered(q)
        filtered(1.0)(q)
    configs = {"none": (share_truth(corpus, 1.0), unfiltered)}
    for share in SHARES:
        configs[f"{share:.2%}"] = (share_truth(corpus, share), filtered(share))
    rows = measure_all(corpus, configs)
    print(f"\n{title}\n{header()}")
    for name, row in rows.items():
        print(line(name, row, rows["none"]), flush=True)


def _title(store: LanceDBStore, settings: StoreSettings) -> str:
    kinds = [i.index_type for i in store._require_table().list_indices() if "vector" in i.columns]
    if not kinds:
        return "exact search (no vector index: below ann_min_rows)"
    return (
        f"ANN search ({kinds[0]}, nprobes={settings.nprobes} for ACLs admitting >= 10%, more "
        f"below; exact at <= {settings.exact_max_rows:,} allowed rows; "
        f"refine_factor={settings.refine_factor})"
    )


def run(
    rows: int,
    queries: int,
    ann: bool,
    data: str = "scifact",
    *,
    base: int = BASE,
    path: Path | None = None,
    probes: Sequence[tuple[int, int]] = (),
    corpus: Corpus | None = None,
) -> None:
    """``path``: keep the loaded table there (reused when it already holds ``rows`` chunks);
    ``probes``: further (nprobes, refine_factor) settings measured on the same index."""
    corpus = corpus or make_corpus(data, rows, queries, base)
    print(
        f"== LanceDB store: {rows:,} chunks x {DIM} dims ({corpus.description}), "
        f"{queries} queries per row, k={K}"
    )
    rss0 = rss_mib()[0]
    with tempfile.TemporaryDirectory() as tmp:
        where = path or Path(tmp) / "store"
        settings = StoreSettings()
        store = load(where, corpus, settings)
        print(f"process RSS: {rss0:,.0f} MiB before the store, {rss_mib()[0]:,.0f} after loading")
        table(_title(store, settings), store, corpus, settings)
        for nprobes, refine in probes:
            tuned = StoreSettings(nprobes=nprobes, refine_factor=refine)
            table(_title(store, tuned), LanceDBStore(where, tuned), corpus, tuned)
        rss, peak = rss_mib()
        print(f"\nprocess RSS after the searches: {rss:,.0f} MiB (peak {peak:,.0f} MiB)")
        if ann and not any("vector" in i.columns for i in store._require_table().list_indices()):
            settings = StoreSettings(ann_min_rows=1)
            store = load(Path(tmp) / "ann", corpus, settings)
            table(_title(store, settings), store, corpus, settings)
