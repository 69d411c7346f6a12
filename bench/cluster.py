"""A three-node OpenSearch cluster (one replica) that loses a node (``python -m bench cluster``).

1. ``kill -9`` one data node during a bulk ingest of ``--chunks`` chunks: the run completes, or
   is re-run (resume) until it does; the final index must equal a reference index written with
   every node up (same ids, count, texts, vectors, ACLs): nothing lost or duplicated.
2. ``kill -9`` one node during ``--queries`` concurrent ACL-filtered queries: every answer must be
   authorized (each hit's ACL admits the asking user) or a clear error, never a leak; reports
   the error rate, the share of answers equal to the answer before the kill, and the recovery
   time (kill → the first of 20 consecutive successful answers).
3. Restart the node: time to green; the next sync must be a no-op.

Nodes run on 127.0.0.1:``--port``..+2 via scripts/opensearch-local.sh (started unless up).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from bench.common import SCRIPT
from rag.config import Settings
from rag.errors import RagError
from rag.identity import UserContext
from rag.pipeline import ingest
from rag.retrieval.core import Retriever
from rag.stores import build_store

GROUPS = ("eng", "hr", "finance", "sales")
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "cluster",
    "shard",
    "replica",
    "node",
    "query",
    "vector",
    "budget",
    "policy",
]


def script(*args: str | int) -> None:
    subprocess.run(["bash", str(SCRIPT), *map(str, args)], check=True, capture_output=True)


def health(port: int) -> dict[str, Any]:
    import httpx

    return dict(httpx.get(f"http://127.0.0.1:{port}/_cluster/health", timeout=5).json())


def corpus(root: Path, chunks: int, seed: int = 3) -> None:
    """Documents of ~10 chunks each (128-token chunks), one folder per group."""
    rng = random.Random(seed)
    docs = max(1, chunks // 10)
    for group in GROUPS:
        (root / group).mkdir(parents=True, exist_ok=True)
        (root / group / ".rag-acl.toml").write_text(f'allow = ["group:{group}"]\n')
    for i in range(docs):
        group = GROUPS[i % len(GROUPS)]
        paras = [
            " ".join(rng.choice(WORDS) for _ in range(90)).capitalize() + "." for _ in range(10)
        ]
        (root / group / f"doc-{i:05d}.txt").write_text(f"Document {i}\n\n" + "\n\n".join(paras))


def settings(data: Path, ports: list[int], alias: str) -> Settings:
    return Settings.model_validate(
        {
            "data_dir": str(data),
            "store": {
                "backend": "opensearch",
                "opensearch": {
                    "hosts": [f"http://127.0.0.1:{p}" for p in ports],
                    "alias": alias,
                    "replicas": 1,
                    "shards": 3,
                },
            },
            "embedding": {"provider": "hash"},
            "chunking": {"max_tokens": 128, "overlap_tokens": 0},
            "sync": {"allow_mass_delete": True},
        }
    )


def snapshot(s: Settings) -> dict[str, tuple[str, str, str]]:
    from opensearchpy.helpers import scan

    store = build_store(s)
    store.refresh()
    client = store.client  # type: ignore[attr-defined]
    out = {}
    for hit in scan(client, index=s.store.opensearch.alias, query={"query": {"match_all": {}}}):
        src = hit["_source"]
        out[hit["_id"]] = (
            src["text"],
            json.dumps([round(x, 5) for x in src["vector"]]),
            json.dumps([sorted(src["acl_allow"]), sorted(src["acl_deny"])]),
        )
    return out


@dataclass
class Answer:
    at: float
    ok: bool
    leak: bool
    same: bool


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench cluster")
    parser.add_argument("--port", type=int, default=9270)
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    args = parser.parse_args(argv)
    print(run(args.port, args.chunks, args.queries, args.concurrency, keep=args.keep))


def run(port: int, chunks: int, queries: int, concurrency: int, keep: bool = False) -> str:
    ports = [port, port + 1, port + 2]
    victim = ports[2]
    try:
        health(port)
    except Exception:
        script("start-cluster", port, 3)
    lines = [f"3-node cluster on {ports}, 3 shards x 1 replica; victim node {victim}"]
    with TemporaryDirectory() as tmp:
        root = Path(tmp) / "corpus"
        corpus(root, chunks)
        tag = f"{int(time.time())}"
        s = settings(Path(tmp) / "d", ports, f"bench-cluster-{tag}")
        # 1. kill a node during the bulk ingest; re-run until a run completes
        killer = threading.Timer(8.0, lambda: script("kill-node", victim))
        killer.start()
        start, attempts, failures = time.perf_counter(), 0, []
        while True:
            attempts += 1
            try:
                summary = ingest(connector(root), s)
                if summary.listing_complete and not summary.quarantined:
                    break
                failures.append(f"run {attempts}: quarantined {len(summary.quarantined)}")
            except RagError as exc:
                failures.append(f"run {attempts}: {type(exc).__name__}: {str(exc)[:120]}")
            if attempts >= 5:
                raise SystemExit(f"no complete run after 5 attempts: {failures}")
        ingest_seconds = time.perf_counter() - start
        killer.cancel()
        got = snapshot(s)
        script("start-node", victim, port, 3)
        ref_settings = settings(Path(tmp) / "ref", ports, f"bench-cluster-ref-{tag}")
        ingest(connector(root), ref_settings)
        want = snapshot(ref_settings)
        same = got == want
        lines.append(
            f"1. ingest with a node killed at 8 s: {attempts} run(s), {ingest_seconds:.1f} s, "
            f"{len(got)} chunks vs reference {len(want)}; identical ids/texts/vectors/ACLs: "
            f"{same}" + (f"; failed runs: {failures}" if failures else "")
        )
        # 2. kill a node during concurrent ACL-filtered queries
        lines.append(queries_under_fault(s, ports, victim, queries, concurrency))
        # 3. restart: back to green; the next sync is a no-op
        start = time.perf_counter()
        script("start-node", victim, port, 3)
        while health(port)["status"] != "green":
            time.sleep(0.5)
        green = time.perf_counter() - start
        again = ingest(connector(root), s)
        noop = again.new == again.changed == again.embedding_calls == 0
        lines.append(
            f"3. restarted node: green after {green:.1f} s; next sync no-op: {noop} "
            f"(new {again.new}, changed {again.changed}, embedding calls {again.embedding_calls})"
        )
        for alias in (s.store.opensearch.alias, ref_settings.store.opensearch.alias):
            import httpx

            httpx.delete(f"http://127.0.0.1:{port}/{alias}*", timeout=30)
    if not keep:
        script("stop-cluster", port, 3)
    return "\n".join(lines)


def connector(root: Path) -> Any:
    from connectors.filesystem import FilesystemConnector

    return FilesystemConnector(root, "cluster")


def queries_under_fault(
    s: Settings, ports: list[int], victim: int, queries: int, concurrency: int
) -> str:
    rng = random.Random(11)
    users = [UserContext.of(f"u{i}", [GROUPS[i % len(GROUPS)]]) for i in range(16)]
    asks = [(rng.choice(users), " ".join(rng.sample(WORDS, 3))) for _ in range(queries)]
    retriever = Retriever.from_settings(s)
    before = {i: ids(retriever, u, q) for i, (u, q) in enumerate(asks[:200])}
    kill_at = [0.0]
    results: list[Answer] = []

    def ask(i: int) -> Answer:
        user, text = asks[i]
        try:
            hits = retriever.retrieve(text, user, k=10)
        except RagError:
            return Answer(time.perf_counter(), False, False, False)
        allowed = user.principals()
        leak = any(not h.chunk.acl.permits(allowed) for h in hits)
        found = [h.chunk.id for h in hits]
        return Answer(time.perf_counter(), True, leak, before.get(i, found) == found)

    def kill() -> None:
        kill_at[0] = time.perf_counter()
        script("kill-node", victim)

    killer = threading.Timer(1.0, kill)
    start = time.perf_counter()
    killer.start()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(ask, range(queries)))
    wall = time.perf_counter() - start
    errors = sum(not r.ok for r in results)
    leaks = sum(r.leak for r in results)
    after = sorted((r for r in results if r.at >= kill_at[0]), key=lambda r: r.at)
    recovery = next(
        (
            after[i].at - kill_at[0]
            for i in range(len(after))
            if all(r.ok for r in after[i : i + 20])
        ),
        float("nan"),
    )
    same = sum(r.same for r in results if r.ok)
    return (
        f"2. {queries} ACL-filtered queries, {concurrency} concurrent, node killed at 1 s: "
        f"{wall:.1f} s, errors {errors} ({errors / queries:.1%}), leaks {leaks}, "
        f"answers equal to the pre-kill answer {same}/{queries - errors}, "
        f"recovery {recovery:.2f} s"
    )


def ids(retriever: Retriever, user: UserContext, text: str) -> list[str]:
    return [h.chunk.id for h in retriever.retrieve(text, user, k=10)]


if __name__ == "__main__":
    main([])
