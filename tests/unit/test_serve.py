"""``rag serve-embeddings``'s routes through Starlette's TestClient: TEI ``/embed`` and
``/rerank``, OpenAI ``/v1/embeddings``, Prometheus ``/metrics``; the dynamic batcher; the address
it logs at startup. (tests/unit/test_embeddings_remote.py drives ``/embed`` over real HTTP.)"""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.testclient import TestClient

from rag.embeddings.hashing import HashEmbedder
from rag.errors import ConfigurationError
from rag.rerank.local import OnnxCrossEncoder
from rag.serve import DynamicBatcher, ServerMetrics, create_app, listen, serve
from rag.tokens import get_encoding
from tests.unit.test_rerank import tiny_cross_encoder

DIM = 16


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> OnnxCrossEncoder:
    return OnnxCrossEncoder(tiny_cross_encoder(tmp_path_factory.mktemp("ce")))


@pytest.fixture
def client(cross_encoder: OnnxCrossEncoder) -> Iterator[TestClient]:
    app = create_app(HashEmbedder(DIM), max_client_batch=8, reranker=cross_encoder)
    with TestClient(app) as test_client:  # runs the lifespan: the batchers' workers
        yield test_client


def _sample(metrics: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f"{name}{{{wanted}}} " if labels else f"{name} "
    lines = [line for line in metrics.splitlines() if line.startswith(prefix)]
    assert lines, f"no {prefix!r} in /metrics"
    return float(lines[0].split()[-1])


def test_tei_embed(client: TestClient) -> None:
    vectors = client.post("/embed", json={"inputs": ["alpha", "beta"]}).json()
    assert np.allclose(vectors, HashEmbedder(DIM).embed_batch(["alpha", "beta"]), atol=1e-6)
    assert len(client.post("/embed", json={"inputs": "one"}).json()) == 1
    assert client.post("/embed", json={"nope": 1}).status_code == 422
    assert client.post("/embed", content=b"{not json").status_code == 422
    assert client.post("/embed", json={"inputs": [1, 2]}).status_code == 422
    assert client.post("/embed", json={"inputs": ["x"] * 9}).status_code == 413


def test_openai_embeddings(client: TestClient) -> None:
    texts = ["What is the Q3 budget?", "Vacation policy"]
    body = client.post("/v1/embeddings", json={"input": texts, "model": "any"}).json()
    assert body["object"] == "list"
    assert body["model"] == HashEmbedder(DIM).model_id
    assert [d["object"] for d in body["data"]] == ["embedding", "embedding"]
    assert [d["index"] for d in body["data"]] == [0, 1]
    expected = HashEmbedder(DIM).embed_batch(texts)
    assert np.allclose([d["embedding"] for d in body["data"]], expected, atol=1e-6)
    tokens = sum(len(get_encoding("cl100k_base").encode(t)) for t in texts)
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}

    one = client.post("/v1/embeddings", json={"input": "Vacation policy", "model": "m"}).json()
    assert np.allclose(one["data"][0]["embedding"], expected[1], atol=1e-6)


def test_openai_embeddings_base64_as_the_openai_client_asks(client: TestClient) -> None:
    body = client.post(
        "/v1/embeddings", json={"input": ["alpha"], "model": "m", "encoding_format": "base64"}
    ).json()
    decoded = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, HashEmbedder(DIM).embed_batch(["alpha"])[0], atol=1e-7)


@pytest.mark.parametrize(
    ("request_body", "param"),
    [
        ({"input": [[1, 2, 3]], "model": "m"}, "input"),  # token arrays
        ({"input": [], "model": "m"}, "input"),
        ({"input": ["x"] * 9, "model": "m"}, "input"),
        ({"model": "m"}, "input"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "x", "dimensions": 3}, "dimensions"),
    ],
)
def test_openai_embeddings_errors(
    client: TestClient, request_body: dict[str, Any], param: str
) -> None:
    response = client.post("/v1/embeddings", json=request_body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param


def test_rerank_tei_shape(client: TestClient) -> None:
    texts = ["bad", "good good", "w", "good"]
    ranked = client.post("/rerank", json={"query": "good", "texts": texts}).json()
    assert [r["index"] for r in ranked] == [1, 3, 2, 0]
    logits = np.array([4.0, 2.0, 0.0, -1.0])
    assert [r["score"] for r in ranked] == pytest.approx(1 / (1 + np.exp(-logits)))
    assert all("text" not in r for r in ranked)
    raw = client.post(
        "/rerank", json={"query": "q", "texts": texts, "raw_scores": True, "return_text": True}
    ).json()
    assert raw[0] == {"index": 1, "score": 4.0, "text": "good good"}
    for bad in (
        {"query": "q", "texts": []},
        {"query": "", "texts": ["a"]},
        {"texts": ["a"]},
        {"query": "q", "texts": "a", "raw_scores": "yes"},
    ):
        assert client.post("/rerank", json=bad).status_code == 422, bad
    assert client.post("/rerank", json={"query": "q", "texts": ["a"] * 9}).status_code == 413


def test_rerank_without_a_cross_encoder_is_424() -> None:
    with TestClient(create_app(HashEmbedder(DIM))) as plain:
        response = plain.post("/rerank", json={"query": "q", "texts": ["a"]})
        assert response.status_code == 424
        assert response.json()["error_type"] == "Backend"
        assert plain.get("/info").json()["reranker_model_id"] is None


def test_info_and_health(client: TestClient, cross_encoder: OnnxCrossEncoder) -> None:
    info = client.get("/info").json()
    assert info["model_id"] == HashEmbedder(DIM).model_id and info["dimension"] == DIM
    assert info["reranker_model_id"] == cross_encoder.model_id
    assert info["max_client_batch_size"] == 8
    assert client.get("/health").json() == {"status": "ok"}


def test_prometheus_metrics(client: TestClient) -> None:
    client.post("/embed", json={"inputs": ["a", "b", "c"]})
    client.post("/embed", json={"nope": 1})
    client.post("/v1/embeddings", json={"input": "a"})
    client.post("/rerank", json={"query": "q", "texts": ["a", "b"]})
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert _sample(text, "rag_serve_requests_total", route="/embed", status="200") == 1
    assert _sample(text, "rag_serve_requests_total", route="/embed", status="422") == 1
    assert _sample(text, "rag_serve_requests_total", route="/rerank", status="200") == 1
    assert _sample(text, "rag_serve_request_seconds_count", route="/v1/embeddings") == 1
    assert _sample(text, "rag_serve_inputs_total", model="embed") == 4
    assert _sample(text, "rag_serve_inputs_total", model="rerank") == 2
    assert _sample(text, "rag_serve_batch_size_sum", model="embed") == 4
    assert _sample(text, "rag_serve_batch_size_count", model="rerank") == 1
    assert _sample(text, "rag_serve_model_seconds_count", model="embed") == 2
    assert _sample(text, "rag_serve_queue_depth", model="embed") == 0


class _SlowDouble:
    """Doubles its inputs; each run takes a while, so requests pile up behind it."""

    def __init__(self) -> None:
        self.runs: list[list[int]] = []

    def __call__(self, items: Sequence[int]) -> np.ndarray:
        self.runs.append(list(items))
        time.sleep(0.05)
        return np.asarray(items, dtype=np.float32) * 2


def test_batcher_batches_concurrent_requests_and_reports_its_queue() -> None:
    run, metrics = _SlowDouble(), ServerMetrics()

    async def scenario() -> list[np.ndarray]:
        batcher: DynamicBatcher[int] = DynamicBatcher(run, 64, 5, name="t", metrics=metrics)
        await batcher.start()
        first = asyncio.ensure_future(batcher.submit([0]))
        await asyncio.sleep(0.02)  # the first batch is in the model now; the rest queue up
        rest = [asyncio.ensure_future(batcher.submit([i, i + 100])) for i in range(1, 6)]
        await asyncio.sleep(0)
        depth = metrics.registry.get_sample_value("rag_serve_queue_depth", {"model": "t"})
        results = await asyncio.gather(first, *rest)
        await batcher.stop()
        assert depth == 10 and batcher.pending == 0
        return results

    results = asyncio.run(scenario())
    assert [r.tolist() for r in results] == [[0.0]] + [
        [2.0 * i, 2.0 * (i + 100)] for i in range(1, 6)
    ]
    assert len(run.runs) == 2 and len(run.runs[1]) == 10  # the five waiting requests: one run


def test_batcher_answers_every_request_with_a_model_failure() -> None:
    def broken(items: Sequence[int]) -> np.ndarray:
        raise RuntimeError("model crashed")

    async def scenario() -> list[BaseException | np.ndarray]:
        batcher: DynamicBatcher[int] = DynamicBatcher(broken, 64, 20)
        await batcher.start()
        results = await asyncio.gather(
            batcher.submit([1]), batcher.submit([2]), return_exceptions=True
        )
        await batcher.stop()
        return list(results)

    results = asyncio.run(scenario())
    assert all(isinstance(r, RuntimeError) for r in results)


def test_serve_logs_where_it_listens(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import uvicorn

    ran: list[Any] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: ran.append(sockets))
    with caplog.at_level(logging.INFO, logger="rag.serve"):
        serve(create_app(HashEmbedder(DIM)), "127.0.0.1", 0)
    ((sock,),) = ran
    port = sock.getsockname()[1]
    sock.close()
    assert f"listening on http://127.0.0.1:{port}" in caplog.text
    assert "/v1/embeddings" in caplog.text and "/rerank" not in caplog.text


def test_listen_serves_real_http_and_refuses_a_taken_port() -> None:
    listener = listen(create_app(HashEmbedder(DIM)), "127.0.0.1", 0, log_level="error")
    thread = threading.Thread(target=listener.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not listener.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert httpx.get(f"{listener.url}/health").json() == {"status": "ok"}
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            with pytest.raises(ConfigurationError, match="cannot listen"):
                listen(create_app(HashEmbedder(DIM)), "127.0.0.1", taken.getsockname()[1])
    finally:
        listener.server.should_exit = True
        thread.join(5)
