"""Issue 16 §4: concurrent chat traffic through the production retrieval path.

``rag.retrieval.core.Retriever.aretrieve`` with the OpenSearch async store
(``AsyncOpenSearchStore``: ``AsyncOpenSearch`` on aiohttp, its default connection pool of 10
per host, the production client settings of ``OpenSearchSettings``) against the index
``python -m bench million -- --keep`` built; or, with ``--lancedb``, the embedded store (its
calls run in worker threads). The embedding model is kept out of the measurement by an
embedder that returns each SciFact claim's cached MiniLM vector.

C concurrent users (1, 8, 32, 64), each in a closed loop (send, wait for the answer, send
the next: no think time) for ``--seconds`` per level, each user in 10 groups of which two
match chunks (a 50%, 10% or 1% group, and a team): every query is ACL-filtered. Per level and
mode: QPS, p50/p95/p99 latency, and the client's CPU (process time / wall time, in cores) and
the node's (from /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import DIM, SHARES, K, rss_mib, scifact_queries
from bench.common import real_embeddings as embed
from rag.config import StoreSettings
from rag.embeddings.base import InputKind, Vectors
from rag.identity import UserContext
from rag.retrieval.core import Mode, Retriever


class FixedEmbedder:
    """The cached MiniLM vector of each known query text (the model stays out of the timing);
    an unknown text is an error, never a made-up vector."""

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self._vectors = vectors

    @property
    def model_id(self) -> str:
        return "bench"

    @property
    def dimension(self) -> int:
        return DIM

    def embed_batch(self, texts: Sequence[str], *, kind: InputKind = "document") -> Vectors:
        return np.stack([self._vectors[t] for t in texts]).astype(np.float32)


def users(count: int) -> list[UserContext]:
    """Users in 10 groups each: one share group (50%, 10% or 1%), one team, 8 that own nothing."""
    shares = [s for s in SHARES if 0.01 <= s < 1.0]
    out = []
    for i in range(count):
        share = f"p{shares[i % len(shares)]:g}".replace(".", "_")
        idle = [f"dept-{i}-{j}" for j in range(8)]
        out.append(UserContext.of(f"u{i}", [share, f"t{i % 1000}", *idle]))
    return out


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def level(
    retriever: Retriever,
    texts: list[str],
    concurrency: int,
    seconds: float,
    mode: Mode,
    node_pid: int | None,
) -> str:
    people = users(concurrency)
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def one_user(i: int) -> None:
        nonlocal errors
        n = i
        while time.perf_counter() < stop:
            text = texts[n % len(texts)]
            n += concurrency
            start = time.perf_counter()
            try:
                hits = await retriever.aretrieve(text, people[i], K, mode=mode)
            except Exception:  # counted and reported; the load goes on
                errors += 1
                continue
            latencies.append((time.perf_counter() - start) * 1000)
            assert len(hits) <= K

    cpu0, node0, wall0 = time.process_time(), _cpu(node_pid), time.perf_counter()
    await asyncio.gather(*(one_user(i) for i in range(concurrency)))
    wall = time.perf_counter() - wall0
    cpu = (time.process_time() - cpu0) / wall
    node = f"{(_cpu(node_pid) - node0) / wall:.2f}" if node_pid else "-"
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) if latencies else (0, 0, 0)
    return (
        f"{mode:<8}{concurrency:>6}{len(latencies):>9,}{len(latencies) / wall:>8.1f}{p50:>9.1f}"
        f"{p95:>9.1f}{p99:>9.1f}{cpu:>11.2f}{node:>10}{errors:>7}"
    )


def _cpu(pid: int | None) -> float:
    return _cpu_seconds(pid) if pid else 0.0


async def run(
    retriever: Retriever,
    texts: list[str],
    levels: list[int],
    modes: list[Mode],
    seconds: float,
    node_pid: int | None,
) -> None:
    await retriever.aretrieve(texts[0], users(1)[0], K)  # index check, connections
    print(
        f"{'mode':<8}{'users':>6}{'queries':>9}{'QPS':>8}{'p50 ms':>9}{'p95 ms':>9}"
        f"{'p99 ms':>9}{'client CPU':>11}{'node CPU':>10}{'errors':>7}",
        flush=True,
    )
    for mode in modes:
        for c in levels:
            print(await level(retriever, texts, c, seconds, mode, node_pid), flush=True)
    await retriever.aclose()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench load --")
    parser.add_argument("--port", type=int, help="the node python -m bench million kept")
    parser.add_argument("--lancedb", type=Path, help="or: the table python -m bench million kept")
    parser.add_argument("--levels", default="1,8,32,64")
    parser.add_argument("--modes", default="dense,hybrid")
    parser.add_argument("--seconds", type=float, default=20.0, help="per level and mode")
    parser.add_argument("--queries", type=int, default=300, help="SciFact claims to cycle")
    args = parser.parse_args(argv)
    texts = scifact_queries(args.queries)
    vectors = embed(texts, kind="query")
    embedder = FixedEmbedder(dict(zip(texts, vectors, strict=True)))
    node_pid: int | None = None
    if args.port:
        from bench.opensearch_acl import settings_for
        from rag.stores.opensearch import OpenSearchStore
        from rag.stores.opensearch_async import AsyncOpenSearchStore

        settings = settings_for(f"http://127.0.0.1:{args.port}").model_copy(
            update={"timeout_seconds": 30.0}
        )
        retriever = Retriever(
            OpenSearchStore(settings),
            embedder,
            top_k=K,
            audit=None,
            async_store=AsyncOpenSearchStore(settings),
        )
        pidfile = Path(f"/tmp/rag-opensearch/{args.port}/opensearch.pid")
        node_pid = int(pidfile.read_text()) if pidfile.exists() else None
        what = f"OpenSearch on :{args.port} (AsyncOpenSearch, pool 10, ef_search 512)"
    elif args.lancedb:
        from rag.stores.lancedb import LanceDBStore

        store: Any = LanceDBStore(args.lancedb, StoreSettings())
        retriever = Retriever(store, embedder, top_k=K, audit=None)
        what = f"LanceDB at {args.lancedb} (worker threads)"
    else:
        parser.error("--port or --lancedb")
    print(
        f"== concurrent users, closed loop, {args.seconds:.0f} s per level: {what}; "
        f"{os.cpu_count()} CPUs shared with other work; audit off"
    )
    levels = [int(c) for c in args.levels.split(",")]
    modes: list[Mode] = [m for m in ("dense", "bm25", "hybrid") if m in args.modes.split(",")]
    asyncio.run(run(retriever, texts, levels, modes, args.seconds, node_pid))
    print(f"client RSS {rss_mib()[0]:,.0f} MiB")
