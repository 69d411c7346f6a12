"""Embedded store under ACL filters: recall@10 against the exact top-10 over the allowed set,
and p50/p95 latency, unfiltered and at allowed shares of 50% down to 0.01% of the chunks.

Synthetic data: clustered 384-d unit vectors (a mixture of Gaussians, like real embeddings).
Each chunk draws u ~ U(0,1) and allows ``group:p<share>`` for every share > u, so a user in that
one group may read that share of the corpus. The baseline is the same search with no filter.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from rag.config import StoreSettings
from rag.identity import PUBLIC
from rag.models import Acl, Chunk, Citation
from rag.stores.base import IndexInfo
from rag.stores.lancedb import LanceDBStore

DIM = 384
K = 10
SHARES = (0.5, 0.1, 0.01, 0.001, 0.0001)


def _label(share: float) -> str:
    return "group:all" if share >= 1.0 else f"group:p{share:g}".replace(".", "_")


def _data(rows: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    centers = rng.normal(size=(max(rows // 100, 10), DIM)).astype(np.float32)
    assign = rng.integers(0, len(centers), size=rows)
    vectors = centers[assign] + 0.6 * rng.normal(size=(rows, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), rng.random(rows)


def _chunks(u: np.ndarray) -> list[Chunk]:
    citation = Citation(document_id="bench", uri="bench", title="bench")
    out = []
    for i, value in enumerate(u):
        allow = {"group:all"} | {_label(s) for s in SHARES if value < s}
        doc = f"d{i}"
        out.append(
            Chunk(
                id=Chunk.make_id(doc, 0),
                document_id=doc,
                source="bench",
                ordinal=0,
                text="",
                token_count=0,
                acl=Acl(allow=frozenset(allow)),
                citation=citation.model_copy(update={"document_id": doc}),
            )
        )
    return out


def _load(
    path: Path, vectors: np.ndarray, chunks: list[Chunk], settings: StoreSettings
) -> LanceDBStore:
    store = LanceDBStore(path, settings)
    store.ensure_index(IndexInfo("bench", DIM))
    step = 20_000
    for start in range(0, len(chunks), step):
        store.upsert(chunks[start : start + step], vectors[start : start + step])
    store.optimize()
    return store


def _measure(
    store: LanceDBStore,
    vectors: np.ndarray,
    u: np.ndarray,
    queries: np.ndarray,
    share: float | None,
) -> tuple[float, float, float, float]:
    """(recall@10, p50 ms, p95 ms, mean hits) for one filter; share None = no filter."""
    table = store._require_table()
    allowed = np.arange(len(u)) if share is None else np.flatnonzero(u < share)
    principals = frozenset({"user:bench", PUBLIC, _label(share if share is not None else 1.0)})
    latencies, recalls, counts = [], [], []
    for q in queries:
        start = time.perf_counter()
        if share is None:
            rows = (
                table.search(q, vector_column_name="vector")
                .distance_type("cosine")
                .select(["id", "_distance"])
                .limit(K)
                .to_arrow()
                .column("id")
                .to_pylist()
            )
            got = rows
        else:
            got = [h.chunk.id for h in store.search(q, principals, K)]
        latencies.append((time.perf_counter() - start) * 1000)
        scores = vectors[allowed] @ q
        top = allowed[np.argsort(-scores)[:K]]
        expected = {Chunk.make_id(f"d{i}", 0) for i in top}
        recalls.append(len(expected & set(got)) / max(len(expected), 1))
        counts.append(len(got))
    return (
        float(np.mean(recalls)),
        float(np.percentile(latencies, 50)),
        float(np.percentile(latencies, 95)),
        float(np.mean(counts)),
    )


def _table(
    title: str, store: LanceDBStore, vectors: np.ndarray, u: np.ndarray, queries: np.ndarray
) -> None:
    for q in queries[:10]:  # warm-up
        store.search(q, frozenset({"group:all"}), K)
    base = _measure(store, vectors, u, queries, None)
    print(f"\n{title}")
    print(
        f"{'filter (allowed share)':<24}{'recall@10':>10}{'p50 ms':>9}{'p95 ms':>9}"
        f"{'p95/unfiltered':>16}{'hits':>7}"
    )
    print(f"{'none':<24}{base[0]:>10.4f}{base[1]:>9.2f}{base[2]:>9.2f}{1.0:>16.2f}{base[3]:>7.1f}")
    for share in (1.0, *SHARES):  # 100%: the ACL filter runs but admits every chunk
        r = _measure(store, vectors, u, queries, share)
        print(
            f"{f'{share:.2%}':<24}{r[0]:>10.4f}{r[1]:>9.2f}{r[2]:>9.2f}"
            f"{r[2] / base[2]:>16.2f}{r[3]:>7.1f}"
        )


def run(rows: int, queries: int, ann: bool) -> None:
    rng = np.random.default_rng(42)
    vectors, u = _data(rows, rng)
    query_vectors, _ = _data(queries, np.random.default_rng(7))
    # queries near the data: perturb random corpus vectors
    picks = rng.integers(0, rows, size=queries)
    query_vectors = vectors[picks] + 0.5 * query_vectors
    query_vectors /= np.linalg.norm(query_vectors, axis=1, keepdims=True)
    chunks = _chunks(u)
    print(f"LanceDB store, {rows:,} chunks x {DIM} dims, {queries} queries per row, k={K}")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        store = _load(Path(tmp) / "flat", vectors, chunks, StoreSettings())
        print(f"load + label indexes: {time.perf_counter() - start:.1f} s")
        _table(
            "exact search (no vector index; default below RAG_STORE__ANN_MIN_ROWS)",
            store,
            vectors,
            u,
            query_vectors,
        )
        if ann:
            settings = StoreSettings(ann_min_rows=1)
            start = time.perf_counter()
            store = _load(Path(tmp) / "ann", vectors, chunks, settings)
            print(f"\nload + IVF_HNSW_SQ index: {time.perf_counter() - start:.1f} s")
            _table(
                f"ANN search (IVF_HNSW_SQ, nprobes={settings.nprobes}, "
                f"refine_factor={settings.refine_factor})",
                store,
                vectors,
                u,
                query_vectors,
            )
