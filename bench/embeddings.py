"""Embedding providers under a quota, and our embedding server against the model itself.

(1) A local bedrock-runtime server enforces a token-bucket quota of calls; Titan v2 embeds one
text per call. Our adaptive limiter, botocore's adaptive retry mode and fixed concurrency 4, side
by side, in one process and in four sharing the quota (``bench.limiter_compare``): throughput
against the quota, and the share of calls wasted on throttling.
(2) ``rag serve-embeddings`` (dynamic batching, real HTTP) against calling the model directly.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import numpy as np

from bench import limiter_compare
from rag.embeddings.resilience import AdaptiveConcurrency


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
    limiter_compare.run()
    from rag.embeddings.minilm import MiniLMEmbedder

    texts = [
        f"Sentence {i}: the drone inspected blade {i % 37} and found erosion near the tip."
        for i in range(1024)
    ]
    direct, served = server_benchmark(MiniLMEmbedder(), texts)
    print("\n== Embedding server (rag serve-embeddings, CPU, all-MiniLM-L6-v2 ONNX), 1,024 texts")
    print(f"direct model calls : {direct:8.1f} texts/s")
    print(f"through the server : {served:8.1f} texts/s  ({served / direct:.0%} of direct)")
