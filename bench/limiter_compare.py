"""Our adaptive limiter against botocore's adaptive retry mode, under one shared quota.

A local bedrock-runtime server enforces a token-bucket quota of calls (Titan v2: one text per
call) and boto3 talks to it over real HTTP. Each client is a separate OS process with its own
boto3 client and limiter, as the mapped Airflow tasks of one sync are; they embed their share of
the texts the way the sync pipeline does (``embed_in_batches``, batches of 32) and start
together. Configurations:

- ``ours``: the production Bedrock path, ``AdaptiveConcurrency(4, 1, 32)`` in front of a boto3
  client that makes a single attempt (every throttle reaches our limiter);
- ``botocore adaptive``: no limiter of ours (32 threads, no pacing); the client's
  ``retries={"mode": "adaptive", "max_attempts": 10}`` paces and retries (its CUBIC token bucket);
- ``fixed 4``: four calls in flight, no pacing, a single attempt (the baseline).

All three share the same outer retries (with jitter) for whatever still fails, and run at the
same time, each against its own server and quota (the machine's load is the same for all).
Reported per configuration: successful calls per second as a share of the quota, and the share
of calls the quota rejected (wasted); medians of the repetitions, and the ratios to botocore.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from typing import Any

from rag.embeddings import embed_in_batches
from rag.embeddings.bedrock import BedrockEmbedder
from rag.embeddings.resilience import (
    AdaptiveConcurrency,
    CircuitBreaker,
    FixedConcurrency,
    ResilientCaller,
    RetryPolicy,
)
from rag.testing.aws import AwsStub, StubConfig

QUOTA = 40.0  # calls per second, shared by all processes
LATENCY = 0.05  # seconds per successful call at the service
CALLS = 320  # Titan calls per run, split between the processes
BATCH = 32  # texts per embed_batch, as the sync pipeline sends them (embedding.batch_size)
REPEATS = 3
PROCESSES = (1, 4)
CONFIGS = ("ours", "botocore adaptive", "fixed 4")
MODEL = "amazon.titan-embed-text-v2:0"


def _limiter(config: str) -> AdaptiveConcurrency:
    if config == "ours":
        return AdaptiveConcurrency(4, 1, 32)  # as BedrockEmbedder builds it
    if config == "botocore adaptive":
        return FixedConcurrency(32)  # threads only: no pacing of ours
    return FixedConcurrency(4)


def _embedder(config: str, url: str) -> BedrockEmbedder:
    breaker = CircuitBreaker(threshold=10_000)
    retry = RetryPolicy(max_attempts=1000, backoff_seconds=0.05, backoff_max_seconds=1.0)
    return BedrockEmbedder(
        MODEL,
        region="us-east-1",
        endpoint_url=url,
        dimensions=256,
        caller=ResilientCaller(_limiter(config), breaker, retry),
        max_concurrency=32,
        client=_botocore_adaptive_client(url) if config == "botocore adaptive" else None,
    )


def _botocore_adaptive_client(url: str) -> Any:
    """What the production client would be without our limiter: botocore paces and retries."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "adaptive", "max_attempts": 10},
        connect_timeout=30,
        read_timeout=30,
        max_pool_connections=32,
    )
    return boto3.client("bedrock-runtime", region_name="us-east-1", endpoint_url=url, config=config)


def _worker(tasks: Any, results: Any, barriers: dict[int, Barrier]) -> None:
    """One process of the pool: per task, its own client and limiter; embeds its texts."""
    results.put(("ready", None))
    while (task := tasks.get()) is not None:
        config, url, first, count, processes = task
        try:
            embedder = _embedder(config, url)
            _ = embedder.client  # built before the clock starts
            texts = [f"benchmark text number {i}" for i in range(first, first + count)]
        except Exception as exc:
            results.put((config, f"{type(exc).__name__}: {exc}"))
            barriers[processes].abort()
            continue
        barriers[processes].wait()
        try:
            embed_in_batches(embedder, texts, BATCH)
            results.put((config, None))
        except Exception as exc:  # reported to the parent, which fails the run
            results.put((config, f"{type(exc).__name__}: {exc}"))


@dataclass(frozen=True)
class Run:
    config: str
    processes: int
    share: float  # successful calls per second / quota
    wasted: float  # throttled calls / all calls the server saw
    attempts: int


class Pool:
    """``max(PROCESSES)`` spawned processes per configuration, started once and reused by every
    run (no run pays for starting Python). In a run of n processes every configuration has its
    own server and quota and its first n processes; all of them start together."""

    def __init__(self, configs: Sequence[str] = CONFIGS, sizes: Sequence[int] = PROCESSES) -> None:
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
        os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
        ctx = mp.get_context("spawn")  # the servers' threads live in this process: no fork
        self.configs = tuple(configs)
        self._barriers = {n: ctx.Barrier(len(configs) * n + 1) for n in sizes}
        self._results = ctx.Queue()
        self._tasks = {c: [ctx.Queue() for _ in range(max(sizes))] for c in configs}
        self._procs = [
            ctx.Process(target=_worker, args=(q, self._results, self._barriers), daemon=True)
            for queues in self._tasks.values()
            for q in queues
        ]
        for p in self._procs:
            p.start()
        for _ in self._procs:  # no run shares the machine with a process still starting
            self._results.get(timeout=300)

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        for queues in self._tasks.values():
            for q in queues:
                q.put(None)
        for p in self._procs:
            p.join(30)

    def run(self, processes: int, calls: int = CALLS) -> list[Run]:
        """One run of every configuration, side by side, each against its own quota."""
        stub_config = StubConfig(dimension=256, quota_per_second=QUOTA, burst=2, latency=LATENCY)
        runs: dict[str, Run] = {}
        with ExitStack() as stack:
            stubs = {c: stack.enter_context(AwsStub(stub_config)) for c in self.configs}
            share = calls // processes
            for config, stub in stubs.items():
                for i in range(processes):
                    task = (config, stub.url, i * share, share, processes)
                    self._tasks[config][i].put(task)
            self._barriers[processes].wait(timeout=120)
            began = time.perf_counter()
            left = dict.fromkeys(self.configs, processes)
            for _ in range(len(self.configs) * processes):
                config, error = self._results.get(timeout=600)
                if error:
                    raise RuntimeError(f"{config} x{processes}: {error}")
                left[config] -= 1
                if not left[config]:  # its last process is done: its server sees no more calls
                    seconds = time.perf_counter() - began
                    ok, throttled = stubs[config].state.ok, stubs[config].state.throttled
                    wasted = throttled / (ok + throttled)
                    runs[config] = Run(
                        config, processes, ok / seconds / QUOTA, wasted, ok + throttled
                    )
        return [runs[c] for c in self.configs]


@dataclass(frozen=True)
class Summary:
    config: str
    processes: int
    share: float  # medians over the repetitions
    wasted: float
    runs: int


def summarize(runs: Sequence[Run]) -> list[Summary]:
    """Medians per (configuration, processes), in the order first seen."""
    keys = list(dict.fromkeys((r.config, r.processes) for r in runs))
    out = []
    for config, processes in keys:
        mine = [r for r in runs if (r.config, r.processes) == (config, processes)]
        out.append(
            Summary(
                config,
                processes,
                statistics.median(r.share for r in mine),
                statistics.median(r.wasted for r in mine),
                len(mine),
            )
        )
    return out


def ratio(ours: float, theirs: float) -> float:
    """ours / theirs; inf where only theirs is zero, 1 where both are."""
    if theirs == 0:
        return 1.0 if ours == 0 else math.inf
    return ours / theirs


def table(summaries: Sequence[Summary]) -> list[str]:
    by_key = {(s.config, s.processes): s for s in summaries}
    lines = [
        f"{'configuration':<20}{'processes':>10}{'of quota':>10}{'wasted':>9}"
        f"{'quota vs botocore':>19}{'wasted vs botocore':>20}"
    ]
    for s in summaries:
        base = by_key.get(("botocore adaptive", s.processes))
        vs = (
            f"{ratio(s.share, base.share):>19.2f}{ratio(s.wasted, base.wasted):>20.2f}"
            if base is not None
            else ""
        )
        lines.append(f"{s.config:<20}{s.processes:>10}{s.share:>10.1%}{s.wasted:>9.1%}{vs}")
    return lines


def run(repeats: int = REPEATS, calls: int = CALLS) -> list[Summary]:
    print(
        f"\n== Our limiter vs botocore's adaptive mode: one quota of {QUOTA:.0f} calls/s (token"
        f" bucket), {LATENCY * 1000:.0f} ms per call, {calls} Titan calls per run in batches of"
        f" {BATCH}, 1 and {PROCESSES[-1]} processes; medians of {repeats} runs"
    )
    runs = []
    with Pool() as pool:
        for rep in range(1, repeats + 1):
            for processes in PROCESSES:
                for r in pool.run(processes, calls):
                    runs.append(r)
                    print(
                        f"  run {rep}: {r.config:<18} x{processes}  {r.share:6.1%} of quota"
                        f"  {r.wasted:6.1%} wasted  {r.attempts} calls"
                    )
    summaries = summarize(runs)
    for line in table(summaries):
        print(line)
    return summaries
