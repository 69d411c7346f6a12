"""Wire-format contract tests: boto3 clients pointed at loopback servers that speak the
bedrock-runtime and sagemaker-runtime protocols; our own TEI-compatible server over real HTTP."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from rag.embeddings.bedrock import BedrockEmbedder
from rag.embeddings.hashing import HashEmbedder
from rag.embeddings.resilience import (
    AdaptiveConcurrency,
    CircuitBreaker,
    ResilientCaller,
    RetryPolicy,
)
from rag.embeddings.sagemaker import SageMakerEmbedder
from rag.embeddings.tei import TEIEmbedder
from rag.errors import EmbeddingError
from rag.testing.aws import AwsStub, StubConfig

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


@pytest.fixture(autouse=True)
def _fake_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """No real AWS: fake static credentials, and the network guard allows loopback only."""
    for key in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
    ):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def golden(name: str, value: object) -> None:
    path = GOLDEN / name
    assert json.loads(path.read_text()) == value, f"request body differs from {path}"


def test_titan_v2_wire_format(tmp_path: Path) -> None:
    with AwsStub(StubConfig(dimension=512)) as stub:
        embedder = BedrockEmbedder(
            "amazon.titan-embed-text-v2:0",
            region="us-east-1",
            endpoint_url=stub.url,
            dimensions=512,
        )
        vectors = embedder.embed_batch(["What is the Q3 budget?", "Vacation policy"])
    assert vectors.shape == (2, 512)
    assert np.allclose(
        vectors,
        HashEmbedder(512).embed_batch(["What is the Q3 budget?", "Vacation policy"]),
        atol=1e-6,
    )
    first = sorted(stub.state.requests, key=lambda r: r.body["inputText"])[0]
    assert first.path == "/model/amazon.titan-embed-text-v2%3A0/invoke"
    golden("bedrock_titan_v2_request.json", first.body)
    assert first.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/")
    assert "/us-east-1/bedrock/aws4_request" in first.headers["Authorization"]
    assert first.headers["Content-Type"] == "application/json"
    assert embedder.tokens_reported == 7  # the tokens the service reported
    assert embedder.model_id == "bedrock/amazon.titan-embed-text-v2:0@512"


def test_cohere_wire_format_batches_of_96() -> None:
    texts = [f"document number {i}" for i in range(200)]
    with AwsStub(StubConfig(dimension=1024)) as stub:
        embedder = BedrockEmbedder(
            "cohere.embed-english-v3", region="us-east-1", endpoint_url=stub.url
        )
        docs = embedder.embed_batch(texts)
        embedder.embed_batch(["a question"], kind="query")
    assert docs.shape == (200, 1024)
    sizes = sorted(len(r.body["texts"]) for r in stub.state.requests)
    assert sizes == [1, 8, 96, 96]
    query = next(r for r in stub.state.requests if r.body["texts"] == ["a question"])
    golden("bedrock_cohere_query_request.json", query.body)
    assert all(
        r.body["input_type"] == "search_document" for r in stub.state.requests if r is not query
    )


def test_inputs_over_the_limit_are_truncated() -> None:
    with AwsStub(StubConfig(dimension=1024)) as stub:
        embedder = BedrockEmbedder(
            "cohere.embed-english-v3", region="us-east-1", endpoint_url=stub.url
        )
        embedder.embed_batch(["x" * 5000, "short"])
    assert embedder.truncated == 1
    assert max(len(t) for t in stub.state.requests[0].body["texts"]) == 2048


@pytest.mark.parametrize(
    ("shape", "golden_file"),
    [
        ("tei", "sagemaker_tei_request.json"),
        ("jumpstart", "sagemaker_jumpstart_request.json"),
        ("hf", "sagemaker_hf_request.json"),
    ],
)
def test_sagemaker_wire_formats(shape: str, golden_file: str) -> None:
    with AwsStub(StubConfig(dimension=384)) as stub:
        embedder = SageMakerEmbedder(
            "minilm-inf2",
            384,
            shape=shape,  # type: ignore[arg-type]
            region="us-east-1",
            endpoint_url=stub.url,
            batch_size=2,
        )
        vectors = embedder.embed_batch(["alpha", "beta", "gamma"])
    assert np.allclose(
        vectors, HashEmbedder(384).embed_batch(["alpha", "beta", "gamma"]), atol=1e-6
    )
    first = next(
        r
        for r in stub.state.requests
        if len(r.body.get("inputs") or r.body.get("text_inputs")) == 2
    )
    assert first.path == "/endpoints/minilm-inf2/invocations"
    assert "/us-east-1/sagemaker/aws4_request" in first.headers["Authorization"]
    golden(golden_file, first.body)


@pytest.mark.slow  # runs in make test, not make test-fast
def test_faults_every_text_embedded_exactly_once_in_bounded_time() -> None:
    texts = [f"chunk {i} of the handbook" for i in range(120)]
    config = StubConfig(
        dimension=256,
        throttle_share=0.3,
        error_share=0.05,
        timeout_share=0.02,
        timeout_sleep=1.5,
        seed=7,
    )
    caller = ResilientCaller(
        AdaptiveConcurrency(8, 1, 32),
        CircuitBreaker(threshold=50),
        RetryPolicy(max_attempts=30, backoff_seconds=0.01, backoff_max_seconds=0.2),
    )
    start = time.monotonic()
    with AwsStub(config) as stub:
        embedder = BedrockEmbedder(
            "amazon.titan-embed-text-v2:0",
            region="us-east-1",
            endpoint_url=stub.url,
            dimensions=256,
            timeout_seconds=0.5,
            caller=caller,
        )
        vectors = embedder.embed_batch(texts)
    elapsed = time.monotonic() - start
    assert np.allclose(vectors, HashEmbedder(256).embed_batch(texts), atol=1e-6)
    assert stub.state.throttled > 20 and stub.state.errors > 0 and stub.state.timeouts > 0
    assert stub.state.delivered == dict.fromkeys(texts, 1)  # exactly once each
    assert elapsed < 90  # random throttling keeps the adaptive rate low, but the run ends


def test_circuit_breaker_opens_when_the_service_keeps_failing() -> None:
    caller = ResilientCaller(
        AdaptiveConcurrency(1, 1, 1),
        CircuitBreaker(threshold=3, cooldown_seconds=60),
        RetryPolicy(max_attempts=10, backoff_seconds=0.001),
    )
    with AwsStub(StubConfig(dimension=256, error_share=1.0)) as stub:
        embedder = BedrockEmbedder(
            "amazon.titan-embed-text-v2:0",
            region="us-east-1",
            endpoint_url=stub.url,
            dimensions=256,
            caller=caller,
        )
        with pytest.raises(EmbeddingError, match="circuit open"):
            embedder.embed_batch(["x"])
        calls = len(stub.state.requests)
        with pytest.raises(EmbeddingError, match="circuit open"):
            embedder.embed_batch(["y"])
        assert len(stub.state.requests) == calls  # failing fast, no new calls


def test_validation_errors_are_not_retried() -> None:
    with AwsStub(StubConfig(dimension=256)) as stub:
        embedder = BedrockEmbedder(
            "amazon.titan-embed-text-v2:0",
            region="us-east-1",
            endpoint_url=stub.url + "/nowhere",
            dimensions=256,
        )
        with pytest.raises(EmbeddingError):
            embedder.embed_batch(["x"])


def test_a_given_client_is_used_as_it_is() -> None:
    """E.g. one whose botocore paces and retries itself (the limiter benchmark's comparison)."""
    import boto3
    from botocore.config import Config

    with AwsStub(StubConfig(dimension=256)) as stub:
        client = boto3.client(
            "bedrock-runtime",
            region_name="us-east-1",
            endpoint_url=stub.url,
            config=Config(retries={"mode": "adaptive", "max_attempts": 3}),
        )
        embedder = BedrockEmbedder(
            "amazon.titan-embed-text-v2:0",
            endpoint_url="http://127.0.0.1:9/unused",  # the given client's endpoint applies
            dimensions=256,
            client=client,
        )
        assert embedder.client is client
        vectors = embedder.embed_batch(["alpha", "beta"])
    assert np.allclose(vectors, HashEmbedder(256).embed_batch(["alpha", "beta"]), atol=1e-6)
    assert len(stub.state.requests) == 2


def test_fixed_concurrency_never_adapts() -> None:
    from rag.embeddings.resilience import FixedConcurrency

    fixed = FixedConcurrency(4)
    fixed.release(fixed.acquire(), throttled=True)
    assert (fixed.limit, fixed.rate) == (4, None)


# -- our TEI-compatible server, over real HTTP -------------------------------------------------
@pytest.fixture
def tei_server() -> object:
    import socket

    import uvicorn

    from rag.serve import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(HashEmbedder(384), max_batch=64, max_wait_ms=20)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", app
    server.should_exit = True
    thread.join(5)


def test_tei_client_against_our_server(tei_server: tuple[str, object]) -> None:
    import httpx

    url, app = tei_server
    texts = [f"text {i}" for i in range(100)]
    client = TEIEmbedder(url, 384, batch_size=4, max_concurrency=16)
    vectors = client.embed_batch(texts)
    assert np.allclose(vectors, HashEmbedder(384).embed_batch(texts), atol=1e-6)
    stats = app.state.batcher.stats  # type: ignore[attr-defined]
    assert stats.texts == 100
    assert max(stats.batch_sizes) > 4  # concurrent requests were batched together
    info = httpx.get(f"{url}/info").json()
    assert info["model_id"] == "hash-embedder-v1-384"
    assert httpx.post(f"{url}/embed", json={"nope": 1}).status_code == 422
    assert httpx.post(f"{url}/embed", json={"inputs": "one"}).json()[0][:3] == pytest.approx(
        HashEmbedder(384).embed_batch(["one"])[0][:3].tolist(), abs=1e-6
    )
