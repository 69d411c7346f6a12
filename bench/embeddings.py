"""Embedding providers under a quota, and our embedding server against the model itself.

(1) A local bedrock-runtime server enforces a token-bucket quota of calls; Titan v2 embeds one
text per call. Adaptive concurrency is compared with fixed concurrency 4 and 32 in the same run:
throughput against the quota, and the share of calls wasted on throttling.
(2) ``rag serve-embeddings`` (dynamic batching, real HTTP) against calling the model directly.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

import numpy as np

from rag.embeddings.bedrock import BedrockEmbedder
from rag.embeddings.resilience import (
    AdaptiveConcurrency,
    CircuitBreaker,
    FixedConcurrency,
    ResilientCaller,
    RetryPolicy,
)
from rag.testing.aws import AwsStub, StubConfig

QUOTA = 40.0  # calls per second
LATENCY = 0.05  # seconds per call at the service
TEXTS = 1200


def _quota_run(limiter: AdaptiveConcurrency) -> tuple[float, float, int]:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    config = StubConfig(dimension=256, quota_per_second=QUOTA, burst=2, latency=LATENCY)
    caller = ResilientCaller(
        limiter,
        CircuitBreaker(threshold=10_000),
        RetryPolicy(max_attempts=1000, backoff_seconds=0.05, backoff_max_seconds=1.0),
    )
    texts = [f"benchmark text number {i}" for i in range(TEXTS)]
    with AwsStub(config) as stub:
        embedder = BedrockEmbedder(
            "amazon.titan-embed-text-v2:0",
            region="us-east-1",
            endpoint_url=stub.url,
            dimensions=256,
            caller=caller,
            max_concurrency=64,
        )
        start = time.perf_counter()
        embedder.embed_batch(texts)
        seconds = time.perf_counter() - start
        total = stub.state.ok + stub.state.throttled
        return stub.state.ok / seconds, stub.state.throttled / total, total


def quota_benchmark() -> None:
    print(
        f"\n== Bedrock under a quota of {QUOTA:.0f} calls/s (token bucket), {LATENCY * 1000:.0f}"
        f" ms per call, {TEXTS} Titan calls"
    )
    print(f"{'concurrency':<22}{'calls/s':>9}{'of quota':>10}{'wasted':>9}{'attempts':>10}")
    for name, limiter in (
        ("adaptive (paced)", AdaptiveConcurrency(2, 1, 64)),
        ("fixed 4", FixedConcurrency(4)),
        ("fixed 32", FixedConcurrency(32)),
    ):
        rate, wasted, attempts = _quota_run(limiter)
        print(f"{name:<22}{rate:>9.1f}{rate / QUOTA:>10.1%}{wasted:>9.1%}{attempts:>10}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_benchmark(
    embedder: Any,
    texts: list[str],
    client_batch: int = 8,
    clients: int = 16,
    repeats: int = 3,
    max_batch: int = 64,
) -> tuple[float, float]:
    """(direct texts/s, server texts/s), medians of ``repeats`` runs each."""
    import uvicorn

    from rag.embeddings.tei import TEIEmbedder
    from rag.serve import create_app

    embedder.embed_batch(texts[:64])  # load and warm up
    direct = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(texts), 64):
            embedder.embed_batch(texts[i : i + 64])
        direct.append(len(texts) / (time.perf_counter() - start))
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(embedder, max_batch=max_batch, max_wait_ms=5),
            host="127.0.0.1",
            port=port,
            log_level="error",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    client = TEIEmbedder(
        f"http://127.0.0.1:{port}",
        embedder.dimension,
        batch_size=client_batch,
        max_concurrency=clients,
        timeout_seconds=120,
    )
    client.caller.limiter = AdaptiveConcurrency(clients, clients, clients)
    client.embed_batch(texts[:64])
    served = []
    for _ in range(repeats):
        start = time.perf_counter()
        vectors = client.embed_batch(texts)
        served.append(len(texts) / (time.perf_counter() - start))
    server.should_exit = True
    thread.join(10)
    expected = embedder.embed_batch(texts[:8])
    assert np.allclose(vectors[:8], expected, atol=1e-4), "server returned other vectors"
    return float(np.median(direct)), float(np.median(served))


def run() -> None:
    quota_benchmark()
    from rag.embeddings.minilm import MiniLMEmbedder

    texts = [
        f"Sentence {i}: the drone inspected blade {i % 37} and found erosion near the tip."
        for i in range(1024)
    ]
    direct, served = server_benchmark(MiniLMEmbedder(), texts)
    print("\n== Embedding server (rag serve-embeddings, CPU, all-MiniLM-L6-v2 ONNX), 1,024 texts")
    print(f"direct model calls : {direct:8.1f} texts/s")
    print(f"through the server : {served:8.1f} texts/s  ({served / direct:.0%} of direct)")
