"""Shared pieces of the benchmarks: synthetic ACL corpora, exact ground truth, a local node."""

from __future__ import annotations

import itertools
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.models import Acl, Chunk, Citation

DIM = 384
K = 10
SHARES = (1.0, 0.5, 0.1, 0.01, 0.001, 0.0001)
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "opensearch-local.sh"


def label(share: float) -> str:
    """The group that may read ``share`` of the synthetic corpus (``group:all`` for 100%)."""
    return "group:all" if share >= 1.0 else f"group:p{share:g}".replace(".", "_")


@dataclass
class Corpus:
    vectors: np.ndarray  # unit rows
    u: np.ndarray  # chunk i is readable by label(s) iff u[i] < s
    chunks: list[Chunk]
    queries: np.ndarray

    def allowed(self, share: float) -> np.ndarray:
        return np.flatnonzero(self.u < share)

    def exact_top(self, query: np.ndarray, share: float) -> set[str]:
        allowed = self.allowed(share)
        top = allowed[np.argsort(-(self.vectors[allowed] @ query))[:K]]
        return {self.chunks[i].id for i in top}


def synthetic(rows: int, queries: int, seed: int = 42) -> Corpus:
    """Clustered unit vectors (a mixture of Gaussians) with nested ACLs: a hard case for HNSW,
    since each query's neighbours are a hundred near-equidistant cluster mates."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(max(rows // 100, 10), DIM)).astype(np.float32)
    assign = rng.integers(0, len(centers), size=rows)
    vectors = centers[assign] + 0.6 * rng.normal(size=(rows, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    u = rng.random(rows)
    picks = rng.integers(0, rows, size=queries)
    q = vectors[picks] + 0.5 * rng.normal(size=(queries, DIM)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return Corpus(vectors.astype(np.float32), u, _acl_chunks(u), q.astype(np.float32))


def _sentences(text: str) -> list[str]:
    parts = [p.strip() for p in re.split(r"(?<=[.!?])\s+(?=[A-Z0-9])", text) if p.strip()]
    return [p for p in parts if len(p) > 20]


def scifact_chunks(rows: int, queries: int, seed: int = 42) -> Corpus:
    """Real text: SciFact titles and abstracts cut into windows of one to three sentences, embedded
    with the
    offline model (cached by text hash under .cache/bench), queried with SciFact's own claims."""
    from evaluation.datasets import default_eval_root, load_beir
    from rag.embeddings import embed_in_batches
    from rag.embeddings.cache import CachedEmbedder
    from rag.embeddings.minilm import MiniLMEmbedder

    data = load_beir(default_eval_root() / "scifact")
    texts: list[str] = []
    for title, text in data.corpus.values():
        sentences = _sentences(text)
        texts.extend(sentences)
        texts.extend(f"{a} {b}" for a, b in itertools.pairwise(sentences))
        texts.extend(" ".join(sentences[i : i + 3]) for i in range(len(sentences) - 2))
        texts.extend(title for _ in (0,) if title)
    texts = list(dict.fromkeys(texts))
    rng = np.random.default_rng(seed)
    if len(texts) < rows:
        raise ValueError(f"only {len(texts)} SciFact windows; ask for fewer rows")
    picked = [texts[i] for i in sorted(rng.choice(len(texts), size=rows, replace=False))]
    embedder = CachedEmbedder(MiniLMEmbedder(), Path(".cache/bench/embeddings.sqlite"))
    vectors = embed_in_batches(embedder, picked, 256)
    query_texts = list(data.queries.values())[:queries]
    q = np.stack([embedder.embed_batch([t], kind="query")[0] for t in query_texts])
    u = rng.random(rows)
    return Corpus(vectors, u, _acl_chunks(u, picked), q.astype(np.float32))


def _acl_chunks(u: np.ndarray, texts: list[str] | None = None) -> list[Chunk]:
    citation = Citation(document_id="d", uri="bench", title="bench")
    chunks = []
    for i, value in enumerate(u):
        doc = f"d{i}"
        allow = frozenset({label(s) for s in SHARES if value < s})
        text = texts[i] if texts is not None else f"chunk {i}"
        chunks.append(
            Chunk(
                id=Chunk.make_id(doc, 0),
                document_id=doc,
                source="bench",
                ordinal=0,
                text=text,
                token_count=2,
                acl=Acl(allow=allow),
                citation=citation.model_copy(update={"document_id": doc}),
            )
        )
    return chunks


def corpus(kind: str, rows: int, queries: int) -> Corpus:
    return scifact_chunks(rows, queries) if kind == "scifact" else synthetic(rows, queries)


@dataclass
class Row:
    recall: float
    p50: float
    p95: float
    hits: float


def measure(corpus: Corpus, share: float, search: Callable[[np.ndarray], list[str]]) -> Row:
    latencies, recalls, counts = [], [], []
    for q in corpus.queries:
        start = time.perf_counter()
        got = search(q)
        latencies.append((time.perf_counter() - start) * 1000)
        expected = corpus.exact_top(q, share)
        recalls.append(len(expected & set(got)) / len(expected) if expected else 1.0)
        counts.append(len(got))
    return Row(
        float(np.mean(recalls)),
        float(np.percentile(latencies, 50)),
        float(np.percentile(latencies, 95)),
        float(np.mean(counts)),
    )


def header() -> str:
    return (
        f"{'allowed share':<15}{'recall@10':>10}{'p50 ms':>9}{'p95 ms':>9}"
        f"{'p95 ratio':>11}{'hits':>7}"
    )


def line(name: str, row: Row, base: Row) -> str:
    return (
        f"{name:<15}{row.recall:>10.4f}{row.p50:>9.2f}{row.p95:>9.2f}"
        f"{row.p95 / base.p95:>11.2f}{row.hits:>7.1f}"
    )


@contextmanager
def opensearch_node(heap: str = "1g") -> Iterator[str]:
    """A fresh local node for the benchmark (the same script the tests use)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1]) % 20000 + 20000
    env_heap = {"RAG_OPENSEARCH_HEAP": heap}
    import os

    subprocess.run(
        [str(SCRIPT), "start", str(port)],
        check=True,
        env={**os.environ, **env_heap},
        stdout=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        subprocess.run([str(SCRIPT), "stop", str(port)], check=False, stdout=subprocess.DEVNULL)
