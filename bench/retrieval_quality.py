"""Retrieval quality and latency of every mode on both stores: SciFact (BEIR, test split) through
the real pipeline (parse, chunk, MiniLM, load), dense, BM25 and hybrid on the embedded store
(LanceDB) and on OpenSearch, for the persona that may read everything (so the ACL filter is in
every query but removes nothing), plus one persona that may read about half of the corpus.

    python -m bench retrieval_quality [-- --opensearch URL] [--stores lancedb,opensearch]
                                      [--modes dense,bm25,hybrid] [--queries N] [--work DIR]

Reports nDCG@10 and Recall@100 at document level, the p50/p95 latency of the store call (k=100;
the query vector is embedded beforehand, so only the store is timed), and each embedded figure
against OpenSearch's for the same mode, measured in the same run. Without ``--opensearch`` a
fresh local node is started (scripts/opensearch-local.sh). Embeddings are cached by content
hash in ``<work>/embedding-cache.sqlite``: only the first run embeds the corpus (about 9,000
chunks; tens of minutes on 2 busy cores).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.beir_connector import BeirConnector
from evaluation.datasets import BeirDataset, default_eval_root, load_beir
from evaluation.metrics import evaluate_run
from evaluation.personas import Overlay, Persona, make_personas
from evaluation.runner import suite_settings
from evaluation.suite import load_suite
from rag.config import Settings
from rag.embeddings import build_embedder
from rag.models import SearchHit
from rag.pipeline import ingest, with_cache
from rag.sources import derive_settings
from rag.stores import build_store

K = 100
MEASURES = ("nDCG@10", "R@100")
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Row:
    store: str
    mode: str
    persona: str
    metrics: dict[str, float]
    latencies_ms: list[float]
    leaks: int

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench retrieval_quality")
    parser.add_argument("--opensearch", help="a running node's URL (default: start one)")
    parser.add_argument("--stores", default="lancedb,opensearch")
    parser.add_argument("--modes", default="dense,bm25,hybrid")
    parser.add_argument("--queries", type=int, default=0, help="0: all 300")
    parser.add_argument("--docs", type=int, default=0, help="judged docs plus others up to N")
    parser.add_argument("--embedder", default="minilm", help="minilm, or hash (a smoke test)")
    parser.add_argument("--work", type=Path, default=ROOT / ".cache" / "bench")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    stores = args.stores.split(",")
    modes = args.modes.split(",")
    with _node(args.opensearch if "opensearch" in stores else "") as url:
        rows = run(stores, modes, args, url)
    print(report(rows))


@contextmanager
def _node(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    from bench.common import opensearch_node

    with opensearch_node() as started:
        yield started


def run(stores: list[str], modes: list[str], args: argparse.Namespace, url: str) -> list[Row]:
    suite = load_suite("scifact-embedded")
    data = load_beir(default_eval_root() / suite.dataset, suite.split)
    chosen = dict(list(data.queries.items())[: args.queries or None])
    if args.docs:
        judged = {d for q in chosen for d in data.qrels.get(q, {}) if d in data.corpus}
        rest = sorted(set(data.corpus) - judged)[: max(0, args.docs - len(judged))]
        data = BeirDataset(
            data.name, {d: data.corpus[d] for d in judged | set(rest)}, data.queries, data.qrels
        )
    overlay = Overlay(suite.personas.spaces)
    everyone = make_personas(suite.personas.spaces, 0, 0)[0]
    half = Persona("half", frozenset(range(0, suite.personas.spaces, 2)), frozenset())
    rows: list[Row] = []
    for backend in stores:
        settings = _settings(backend, args, url)
        started = time.perf_counter()
        summary = ingest(BeirConnector(f"eval-{suite.dataset}", data.corpus, overlay), settings)
        store = build_store(settings)
        store.optimize()
        print(
            f"{backend}: {summary.chunks} chunks written this run, {store.count()} in the "
            f"index ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        embedder = with_cache(build_embedder(settings.embedding), settings)
        texts = list(chosen.values())
        vectors = embedder.embed_batch(texts, kind="query")
        for mode in modes:
            for persona in (everyone, half):
                search = _searcher(store, mode, persona)
                rows.append(
                    _measure(backend, mode, persona, search, chosen, vectors, data, overlay)
                )
    return rows


def _settings(backend: str, args: argparse.Namespace, url: str) -> Settings:
    suite = load_suite("scifact-embedded")
    work: Path = args.work
    base = suite_settings(suite, work, Settings(data_dir=work / "data"))
    name = f"scifact-{args.embedder}-{args.docs or 'all'}-{backend}"
    store: dict[str, Any] = {"backend": backend}
    if backend == "opensearch":
        store["opensearch"] = {"hosts": [url], "alias": f"bench-{name}", "replicas": 0}
    overrides = {"store": store, "data_dir": work / name, "embedding": {"provider": args.embedder}}
    return derive_settings(base, overrides)


def _searcher(store: Any, mode: str, persona: Persona) -> Callable[..., list[SearchHit]]:
    principals = persona.user.principals()
    if mode == "dense":
        return lambda text, vector: store.search(vector, principals, K)
    if mode == "bm25":
        return lambda text, vector: store.search_text(text, principals, K)
    return lambda text, vector: store.search_hybrid(text, vector, principals, K)


def _measure(
    backend: str,
    mode: str,
    persona: Persona,
    search: Callable[..., list[SearchHit]],
    queries: dict[str, str],
    vectors: np.ndarray,
    data: BeirDataset,
    overlay: Overlay,
) -> Row:
    visible = {d for d in data.corpus if persona.may_read(overlay, d)}
    qrels = {q: {d: r for d, r in data.qrels.get(q, {}).items() if d in visible} for q in queries}
    qrels = {q: rel for q, rel in qrels.items() if rel}
    search(*next(zip(queries.values(), vectors, strict=True)))  # warm up
    run: dict[str, dict[str, float]] = {}
    latencies: list[float] = []
    leaks = 0
    for (qid, text), vector in zip(queries.items(), vectors, strict=True):
        started = time.perf_counter()
        hits = search(text, vector)
        latencies.append((time.perf_counter() - started) * 1000)
        ranking: dict[str, float] = {}
        for rank, hit in enumerate(hits):
            doc = BeirConnector.doc_id_of(hit.chunk.citation.uri)
            leaks += doc not in visible
            ranking.setdefault(doc, float(len(hits) - rank))
        run[qid] = ranking
    metrics = evaluate_run(qrels, run, MEASURES)
    return Row(backend, mode, persona.name, metrics, latencies, leaks)


def report(rows: list[Row]) -> str:
    base = {(r.mode, r.persona): r for r in rows if r.store == "opensearch"}
    lines = [
        "| store | mode | persona | nDCG@10 | R@100 | p50 ms | p95 ms | leaks "
        "| ΔnDCG@10 vs OpenSearch | p50 ratio vs OpenSearch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ref = base.get((r.mode, r.persona))
        delta = f"{r.metrics['nDCG@10'] - ref.metrics['nDCG@10']:+.4f}" if ref else "-"
        ratio = f"{r.pct(50) / ref.pct(50):.2f}x" if ref else "-"
        lines.append(
            f"| {r.store} | {r.mode} | {r.persona} | {r.metrics['nDCG@10']:.4f} "
            f"| {r.metrics['R@100']:.4f} | {statistics.median(r.latencies_ms):.1f} "
            f"| {r.pct(95):.1f} | {r.leaks} | {delta} | {ratio} |"
        )
    return "\n".join(lines)
