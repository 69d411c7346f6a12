"""Shared pieces of the benchmarks: ACL corpora (synthetic, or real SciFact embeddings extended
to any size), exact ground truth, resource figures (RSS, OpenSearch heap), a local node."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rag.models import Acl, Chunk, Citation

DIM = 384
K = 10
SHARES = (1.0, 0.5, 0.1, 0.01, 0.001, 0.0001)
TEAMS = 1000  # every chunk is also readable by one of TEAMS team groups (group:t<n>)
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "opensearch-local.sh"
REAL_CACHE = Path(".cache/bench/embeddings.sqlite")
BASE = 8000  # real SciFact sentence vectors behind a corpus larger than that (see extend)
NOISE = 0.01  # per-dimension noise of an extended vector


def label(share: float) -> str:
    """The group that may read ``share`` of the synthetic corpus (``group:all`` for 100%)."""
    return "group:all" if share >= 1.0 else f"group:p{share:g}".replace(".", "_")


def team(n: int) -> str:
    return f"group:t{n}"


@dataclass
class Corpus:
    """``rows`` chunks: vectors, ACL draws and texts, built lazily batch by batch (a million
    pydantic chunks at once would not fit beside the stores).

    Chunk ``i`` is readable by ``label(s)`` iff ``u[i] < s`` and by ``team(teams[i])``; its
    distinct ACL (``acl_ids[i]``, also in its metadata as ``acl_id``) is (how many share labels
    it has, its team)."""

    vectors: np.ndarray  # unit rows, float32
    u: np.ndarray
    teams: np.ndarray
    queries: np.ndarray
    text: Callable[[int], str]
    description: str
    query_texts: list[str] = field(default_factory=list)
    _ids: list[str] | None = None
    _acl_ids: np.ndarray | None = None
    _truth: dict[Any, list[set[str]]] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return len(self.u)

    @property
    def ids(self) -> list[str]:
        if self._ids is None:
            self._ids = [Chunk.make_id(f"d{i}", 0) for i in range(self.rows)]
        return self._ids

    @property
    def levels(self) -> np.ndarray:
        """How many share labels chunk i has (1: group:all only ... 6: all of them)."""
        levels: np.ndarray = np.sum(self.u[:, None] < np.array(SHARES)[None, :], axis=1)
        return levels

    @property
    def acl_ids(self) -> np.ndarray:
        if self._acl_ids is None:
            self._acl_ids = ((self.levels - 1) * TEAMS + self.teams).astype(np.int64)
        return self._acl_ids

    def acl_of(self, i: int) -> Acl:
        allow = {label(s) for s in SHARES if self.u[i] < s}
        allow.add(team(int(self.teams[i])))
        return Acl(allow=frozenset(allow))

    def chunks(self, start: int, stop: int) -> list[Chunk]:
        citation = Citation(document_id="d", uri="bench", title="bench")
        acl_ids = self.acl_ids[start:stop]
        out = []
        for i in range(start, min(stop, self.rows)):
            doc = f"d{i}"
            out.append(
                Chunk(
                    id=self.ids[i],
                    document_id=doc,
                    source="bench",
                    ordinal=0,
                    text=self.text(i),
                    token_count=2,
                    acl=self.acl_of(i),
                    citation=citation.model_copy(update={"document_id": doc}),
                    metadata={"acl_id": int(acl_ids[i - start])},
                )
            )
        return out

    def allowed(self, share: float) -> np.ndarray:
        return self.u < share

    def truth(self, key: Any, mask: np.ndarray) -> list[set[str]]:
        """The exact top-K ids of every query among the rows ``mask`` admits (cached by key)."""
        if key not in self._truth:
            self._truth[key] = exact_top(self.vectors, self.queries, mask, self.ids)
        return self._truth[key]


def exact_top(
    vectors: np.ndarray, queries: np.ndarray, mask: np.ndarray, ids: list[str]
) -> list[set[str]]:
    rows = np.flatnonzero(mask)
    sub = vectors[rows]
    out: list[set[str]] = []
    for start in range(0, len(queries), 32):
        scores = queries[start : start + 32] @ sub.T  # (q, allowed)
        kth = min(K, scores.shape[1]) - 1
        if kth < 0:
            out.extend(set() for _ in range(scores.shape[0]))
            continue
        top = np.argpartition(-scores, kth, axis=1)[:, : kth + 1]
        out.extend({ids[rows[j]] for j in row} for row in top)
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    unit: np.ndarray = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return unit


def synthetic(rows: int, queries: int, seed: int = 42) -> Corpus:
    """Clustered unit vectors (a mixture of Gaussians) with nested ACLs: a hard case for HNSW,
    since each query's neighbours are a hundred near-equidistant cluster mates."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(max(rows // 100, 10), DIM)).astype(np.float32)
    assign = rng.integers(0, len(centers), size=rows)
    vectors = _unit(centers[assign] + 0.6 * rng.normal(size=(rows, DIM)).astype(np.float32))
    u = rng.random(rows)
    picks = rng.integers(0, rows, size=queries)
    q = _unit(vectors[picks] + 0.5 * rng.normal(size=(queries, DIM)).astype(np.float32))
    teams = rng.integers(0, TEAMS, size=rows)
    return Corpus(vectors, u, teams, q, lambda i: f"chunk {i}", "gaussian clusters")


def _sentences(text: str) -> list[str]:
    parts = [p.strip() for p in re.split(r"(?<=[.!?])\s+(?=[A-Z0-9])", text) if p.strip()]
    return [p for p in parts if len(p) > 20]


def scifact_sentences(seed: int = 42) -> list[str]:
    """SciFact's distinct abstract sentences, in a fixed seeded order (the base of the corpus:
    its first ``base`` are embedded, once, into the bench's cache)."""
    from evaluation.datasets import default_eval_root, load_beir

    data = load_beir(default_eval_root() / "scifact")
    sentences = list(dict.fromkeys(s for _, text in data.corpus.values() for s in _sentences(text)))
    order = np.random.default_rng(seed).permutation(len(sentences))
    return [sentences[i] for i in order]


def scifact_queries(count: int) -> list[str]:
    from evaluation.datasets import default_eval_root, load_beir

    return list(load_beir(default_eval_root() / "scifact").queries.values())[:count]


def real_embeddings(
    texts: list[str], kind: str = "document", batch: int = 64, log_every: int = 0
) -> np.ndarray:
    """MiniLM vectors of ``texts`` through the bench's cache (resumable: only texts missing
    from the cache reach the model, a batch at a time, each batch committed)."""
    from rag.embeddings.cache import CachedEmbedder
    from rag.embeddings.minilm import MiniLMEmbedder

    embedder = CachedEmbedder(MiniLMEmbedder(), REAL_CACHE)
    parts = []
    started = time.perf_counter()
    for start in range(0, len(texts), batch):
        part = texts[start : start + batch]
        parts.append(embedder.embed_batch(part, kind=kind))  # type: ignore[arg-type]
        if log_every and (start // batch) % log_every == 0:
            rate = (start + len(part)) / (time.perf_counter() - started)
            print(f"  embedded {start + len(part):,}/{len(texts):,} ({rate:.1f}/s)", flush=True)
    if not parts:
        return np.zeros((0, DIM), dtype=np.float32)
    return np.concatenate(parts).astype(np.float32)


def scifact_chunks(rows: int, queries: int, base: int = BASE, seed: int = 42) -> Corpus:
    """Real text: SciFact sentences embedded once with the offline model (cached by text hash
    under .cache/bench), queried with SciFact's own claims (real query vectors).

    Rows beyond ``base`` are *extended*: row i mixes two real sentences a (weight 1 - w) and b
    (weight w, w uniform in [0.1, 0.5]) plus N(0, NOISE^2) per dimension, renormalised, and its
    text is "a b" (MiniLM mean-pools tokens, so a two-sentence chunk's embedding lies near the
    weighted mean of its sentences'). So every vector stays on the real-embedding manifold,
    the BM25 side has real words, and ~rows/base chunks share each dominant sentence: a
    harder neighbourhood than real text, where few chunks are that close."""
    sentences = scifact_sentences(seed)
    base = min(base, rows, len(sentences))
    real = real_embeddings(sentences[:base], log_every=20)
    query_texts = scifact_queries(queries)
    q = real_embeddings(query_texts, kind="query")
    rng = np.random.default_rng(seed)
    extra = rows - base
    a = rng.integers(0, base, size=extra)
    b = rng.integers(0, base, size=extra)
    w = rng.uniform(0.1, 0.5, size=extra).astype(np.float32)
    vectors = np.empty((rows, DIM), dtype=np.float32)
    vectors[:base] = real
    for start in range(0, extra, 100_000):
        s = slice(start, start + 100_000)
        mixed = (1 - w[s, None]) * real[a[s]] + w[s, None] * real[b[s]]
        mixed += NOISE * rng.standard_normal(size=mixed.shape, dtype=np.float32)
        vectors[base + start : base + start + len(mixed)] = _unit(mixed)
    u = rng.random(rows)
    teams = rng.integers(0, TEAMS, size=rows)

    def text(i: int) -> str:
        if i < base:
            return sentences[i]
        return f"{sentences[a[i - base]]} {sentences[b[i - base]]}"

    what = f"SciFact: {base:,} real MiniLM sentence vectors" + (
        f", extended to {rows:,} by two-sentence mixtures + noise {NOISE}" if extra else ""
    )
    return Corpus(vectors, u, teams, q.astype(np.float32), text, what, query_texts)


def corpus(kind: str, rows: int, queries: int, base: int = BASE) -> Corpus:
    return scifact_chunks(rows, queries, base) if kind == "scifact" else synthetic(rows, queries)


@dataclass
class Row:
    recall: float
    p50: float
    p95: float
    hits: float


def measure(
    corpus: Corpus, truth: list[set[str]], search: Callable[[np.ndarray], list[str]]
) -> Row:
    latencies, recalls, counts = [], [], []
    for q, expected in zip(corpus.queries, truth, strict=True):
        start = time.perf_counter()
        got = search(q)
        latencies.append((time.perf_counter() - start) * 1000)
        recalls.append(len(expected & set(got)) / len(expected) if expected else 1.0)
        counts.append(len(got))
    return Row(
        float(np.mean(recalls)),
        float(np.percentile(latencies, 50)),
        float(np.percentile(latencies, 95)),
        float(np.mean(counts)),
    )


def measure_all(
    corpus: Corpus,
    configs: dict[str, tuple[list[set[str]], Callable[[np.ndarray], list[str]]]],
) -> dict[str, Row]:
    """:func:`measure` for several searches at once, interleaved query by query (in a rotating
    order), so a machine whose load drifts during the run skews none of them more than another:
    their ratios stay fair even where the absolute figures wander."""
    names = list(configs)
    latencies: dict[str, list[float]] = {n: [] for n in names}
    recalls: dict[str, list[float]] = {n: [] for n in names}
    counts: dict[str, list[int]] = {n: [] for n in names}
    for i, q in enumerate(corpus.queries):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            truth, search = configs[name]
            start = time.perf_counter()
            got = search(q)
            latencies[name].append((time.perf_counter() - start) * 1000)
            expected = truth[i]
            recalls[name].append(len(expected & set(got)) / len(expected) if expected else 1.0)
            counts[name].append(len(got))
    return {
        n: Row(
            float(np.mean(recalls[n])),
            float(np.percentile(latencies[n], 50)),
            float(np.percentile(latencies[n], 95)),
            float(np.mean(counts[n])),
        )
        for n in names
    }


def share_truth(corpus: Corpus, share: float) -> list[set[str]]:
    return corpus.truth(("share", share), corpus.allowed(share))


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


# -- resources ---------------------------------------------------------------------------------
def rss_mib(pid: int | None = None) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MiB, from /proc."""
    values = {}
    for entry in Path(f"/proc/{pid or os.getpid()}/status").read_text().splitlines():
        key, _, rest = entry.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def dir_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def opensearch_memory(client: Any, url: str) -> str:
    """Heap, off-heap (non-heap, direct buffers, mapped), process RSS and segment figures of
    the (single) node behind ``client``."""
    stats = client.nodes.stats(metric="jvm,process,indices")
    node = next(iter(stats["nodes"].values()))
    jvm, mem = node["jvm"]["mem"], node["jvm"].get("buffer_pools", {})
    mib = 2**20
    port = url.rsplit(":", 1)[-1]
    pidfile = Path(f"/tmp/rag-opensearch/{port}/opensearch.pid")
    rss = f"{rss_mib(int(pidfile.read_text()))[0]:,.0f}" if pidfile.exists() else "?"
    idx = node["indices"]
    return (
        f"heap used {jvm['heap_used_in_bytes'] / mib:,.0f} / committed "
        f"{jvm['heap_committed_in_bytes'] / mib:,.0f} / max {jvm['heap_max_in_bytes'] / mib:,.0f} "
        f"MiB; non-heap {jvm['non_heap_used_in_bytes'] / mib:,.0f} MiB; direct buffers "
        f"{mem.get('direct', {}).get('used_in_bytes', 0) / mib:,.0f} MiB; process RSS {rss} MiB; "
        f"store {idx['store']['size_in_bytes'] / mib:,.0f} MiB in "
        f"{idx['segments']['count']} segments (segment memory "
        f"{idx['segments']['memory_in_bytes'] / mib:,.1f} MiB)"
    )


@contextmanager
def opensearch_node(heap: str = "1g", port: int | None = None, keep: bool = False) -> Iterator[str]:
    """A fresh local node for the benchmark (the same script the tests use); with ``keep``,
    it is left running (and reused if already up on ``port``)."""
    if port is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1]) % 20000 + 20000
    url = f"http://127.0.0.1:{port}"
    running = keep and Path(f"/tmp/rag-opensearch/{port}/opensearch.pid").exists()
    if not running:
        subprocess.run(
            [str(SCRIPT), "start", str(port)],
            check=True,
            env={**os.environ, "RAG_OPENSEARCH_HEAP": heap},
            stdout=subprocess.DEVNULL,
        )
    try:
        yield url
    finally:
        if not keep:
            subprocess.run([str(SCRIPT), "stop", str(port)], check=False, stdout=subprocess.DEVNULL)
