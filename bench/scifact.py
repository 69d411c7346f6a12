"""SciFact (BEIR, test split) through our own chunker, embedder and stores: nDCG@10 and
Recall@100 at document level for BM25, dense and hybrid on OpenSearch, and dense on LanceDB,
next to the published numbers. Embeddings are cached by text hash under ``.cache/bench``."""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import opensearch_node
from evaluation.datasets import default_eval_root, load_beir
from evaluation.metrics import evaluate_run
from rag.chunking import Chunker
from rag.config import ChunkingSettings, OpenSearchSettings, StoreSettings
from rag.embeddings import embed_in_batches, embed_query
from rag.embeddings.cache import CachedEmbedder
from rag.embeddings.minilm import MiniLMEmbedder
from rag.identity import PUBLIC
from rag.models import Acl, Chunk, SearchHit, SourceDocument
from rag.parsing import Element
from rag.stores.base import IndexInfo
from rag.stores.lancedb import LanceDBStore
from rag.stores.opensearch import OpenSearchStore

PUBLISHED = {
    "bm25": "0.665 (BEIR), 0.679 (Anserini), 0.676 (bm25s)",
    "dense": "0.6451 (MTEB, all-MiniLM-L6-v2)",
    "hybrid": "-",
}
CACHE = Path(".cache/bench/embeddings.sqlite")
DEPTH = 100


def _chunks(corpus: dict[str, tuple[str, str]]) -> list[Chunk]:
    chunker = Chunker(ChunkingSettings(max_tokens=512, overlap_tokens=0))
    out: list[Chunk] = []
    for doc_id, (title, text) in corpus.items():
        doc = SourceDocument(
            source="scifact",
            id=f"scifact-{doc_id}",
            uri=doc_id,
            title=title,
            mime_type="text/plain",
            content_hash="-",
            size_bytes=len(text),
            modified_at=datetime(2020, 1, 1, tzinfo=UTC),
            acl=Acl.public(),
        )
        elements = [Element("Title", title)] if title else []
        elements.append(Element("NarrativeText", text or title))
        out.extend(chunker.chunk(doc, elements))
    return out


def _doc_run(hits: list[SearchHit]) -> dict[str, float]:
    """Chunk hits to a document ranking: a document scores as its best chunk."""
    run: dict[str, float] = {}
    for rank, hit in enumerate(hits):
        doc = hit.chunk.citation.uri
        run.setdefault(doc, float(len(hits) - rank))
    return run


def run() -> None:
    data = load_beir(default_eval_root() / "scifact")
    chunks = _chunks(data.corpus)
    embedder = CachedEmbedder(MiniLMEmbedder(), CACHE)
    print(
        f"\n== SciFact test: {len(data.corpus):,} docs -> {len(chunks):,} chunks, "
        f"{len(data.queries)} queries, model {embedder.model_id}"
    )
    start = time.perf_counter()
    vectors = embed_in_batches(embedder, [c.text for c in chunks], 64)
    qvec = {q: embed_query(embedder, text) for q, text in data.queries.items()}
    print(
        f"embedding: {time.perf_counter() - start:.1f} s "
        f"(cache hits {embedder.hits}, misses {embedder.misses})"
    )
    principals = frozenset({"user:eval", PUBLIC})
    info = IndexInfo(embedder.model_id, embedder.dimension)
    runs: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        lance = LanceDBStore(Path(tmp), StoreSettings())
        lance.ensure_index(info)
        lance.upsert(chunks, vectors)
        runs["dense (LanceDB)"] = {
            q: _doc_run(lance.search(v, principals, DEPTH)) for q, v in qvec.items()
        }
    with opensearch_node() as url:
        store = OpenSearchStore(
            OpenSearchSettings(hosts=[url], alias="scifact", replicas=0, timeout_seconds=300)
        )
        store.ensure_index(info)
        store.upsert(chunks, vectors)
        store.optimize()
        runs["bm25 (OpenSearch)"] = {
            q: _doc_run(store.search_text(t, principals, DEPTH)) for q, t in data.queries.items()
        }
        runs["dense (OpenSearch)"] = {
            q: _doc_run(store.search(qvec[q], principals, DEPTH)) for q in data.queries
        }
        runs["hybrid (OpenSearch)"] = {
            q: _doc_run(store.search_hybrid(t, qvec[q], principals, DEPTH))
            for q, t in data.queries.items()
        }
    print(f"{'retrieval':<22}{'nDCG@10':>9}{'R@100':>8}   published nDCG@10")
    for name, r in runs.items():
        scores = evaluate_run(data.qrels, r, ("nDCG@10", "R@100"))
        kind = name.split()[0]
        print(f"{name:<22}{scores['nDCG@10']:>9.4f}{scores['R@100']:>8.4f}   {PUBLISHED[kind]}")
