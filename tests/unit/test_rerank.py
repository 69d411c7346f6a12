"""Reranking: the ONNX cross-encoder on a tiny model built here, Bedrock's Rerank wire format
against the loopback bedrock-agent-runtime, the TEI client against our own server, and the helper
the retriever applies (a reranker only reorders the hits it is given)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rag.accounting import UsageLedger
from rag.embeddings.hashing import HashEmbedder
from rag.embeddings.resilience import (
    AdaptiveConcurrency,
    CircuitBreaker,
    ResilientCaller,
    RetryPolicy,
)
from rag.errors import ConfigurationError, EmbeddingError
from rag.models import Acl, Chunk, Citation, SearchHit
from rag.rerank import (
    MeteredReranker,
    Ranking,
    RerankSettings,
    arerank,
    build_reranker,
    checked_ranking,
    rank,
    rerank_hits,
)
from rag.rerank.bedrock import BedrockReranker
from rag.rerank.local import OnnxCrossEncoder, _to_logits
from rag.rerank.tei import TEIReranker
from rag.testing.aws import AwsStub, StubConfig, overlap_score

GOLDEN = Path(__file__).resolve().parents[1] / "golden"

# -- a tiny cross-encoder, written as ONNX protobuf by hand (the onnx package is not installed) --
# Its logit is the sum of a per-token weight over the *passage* tokens (token type 1) that the
# attention mask keeps: the query's tokens count for nothing, so a tokenizer that swaps or drops
# the pair's segments, a mask that is ignored or a truncation that is skipped all change scores.
VOCAB = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "good": 4, "bad": 5, "query": 6, "w": 7}
WEIGHTS = [0.0, 0.0, 0.0, 0.0, 2.0, -1.0, 0.0, 0.0]


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _len(field: int, data: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _str(field: int, text: str) -> bytes:
    return _len(field, text.encode())


def _attr_int(name: str, value: int) -> bytes:
    return _str(1, name) + _int(3, value) + _int(20, 2)  # AttributeProto, type INT


def _node(op: str, inputs: Sequence[str], output: str, *attrs: bytes) -> bytes:
    body = b"".join(_str(1, i) for i in inputs) + _str(2, output) + _str(3, output) + _str(4, op)
    return _len(1, body + b"".join(_len(5, a) for a in attrs))


def _tensor(name: str, dtype: int, dims: Sequence[int], raw: bytes) -> bytes:
    return _len(
        5, b"".join(_int(1, d) for d in dims) + _int(2, dtype) + _str(8, name) + _len(9, raw)
    )


def _value(field: int, name: str, dtype: int, dims: Sequence[str]) -> bytes:
    shape = b"".join(_len(1, _str(2, d)) for d in dims)
    return _len(field, _str(1, name) + _len(2, _len(1, _int(1, dtype) + _len(2, shape))))


def tiny_cross_encoder(folder: Path, *, token_types: bool = True) -> Path:
    """Write model.onnx and tokenizer.json of the tiny cross-encoder into ``folder``.
    Without ``token_types`` the model takes no token_type_ids and sums over every token."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = struct.pack(f"<{len(WEIGHTS)}f", *WEIGHTS)
    nodes = [
        _node("Gather", ["W", "input_ids"], "g", _attr_int("axis", 0)),
        _node("Cast", ["attention_mask"], "m", _attr_int("to", 1)),
        _node("Mul", ["g", "m"], "gm"),
    ]
    summed = "gm"
    if token_types:
        nodes += [
            _node("Cast", ["token_type_ids"], "tt", _attr_int("to", 1)),
            _node("Mul", ["gm", "tt"], "gmt"),
        ]
        summed = "gmt"
    nodes.append(_node("ReduceSum", [summed, "axes"], "logits", _attr_int("keepdims", 1)))
    inputs = ["input_ids", "attention_mask"] + (["token_type_ids"] if token_types else [])
    graph = (
        b"".join(nodes)
        + _str(2, "tiny-cross-encoder")
        + _tensor("W", 1, [len(WEIGHTS)], weights)
        + _tensor("axes", 7, [1], struct.pack("<q", 1))
        + b"".join(_value(11, name, 7, ["n", "s"]) for name in inputs)
        + _value(12, "logits", 1, ["n", "one"])
    )
    return write_model_folder(folder, graph, VOCAB)


def write_model_folder(folder: Path, graph: bytes, vocab: dict[str, int]) -> Path:
    """``folder``'s model.onnx (``graph`` in an opset-13 ModelProto) and a word-level
    tokenizer.json over ``vocab`` ([CLS] 2, [SEP] 3)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    model = _int(1, 8) + _len(8, _str(1, "") + _int(2, 13)) + _len(7, graph)
    (folder / "model.onnx").write_bytes(model)
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_cross_encoder(tmp_path_factory.mktemp("tiny-ce"))


PASSAGES = ["bad bad", "good", "w w", "good good bad", "good good good", "bad"]
# passage logits: -2, 2, 0, 3, 6, -1
EXPECTED_ORDER = [4, 3, 1, 2, 5, 0]


def test_cross_encoder_scores_pairs_and_ranks_best_first(model_dir: Path) -> None:
    encoder = OnnxCrossEncoder(model_dir, batch_size=2)  # several runs, lengths sorted across them
    ranking = encoder.rerank("good query", PASSAGES)
    assert encoder.calls == 3
    assert [i for i, _ in ranking] == EXPECTED_ORDER
    logits = np.array([-2, 2, 0, 3, 6, -1], dtype=np.float64)
    assert [s for _, s in ranking] == pytest.approx((1 / (1 + np.exp(-logits)))[EXPECTED_ORDER])
    assert encoder.rerank("good query", PASSAGES, top_n=2) == ranking[:2]
    assert encoder.rerank("good query", []) == []
    assert encoder.model_id == f"onnx/{model_dir.name}"
    # the query is segment 0: its words carry no weight in this model
    assert encoder.logits([("good good good", "w"), ("", "good")]).tolist() == [0.0, 2.0]


def test_cross_encoder_truncates_the_passage_not_the_query(model_dir: Path) -> None:
    encoder = OnnxCrossEncoder(model_dir, max_sequence_tokens=6)
    # [CLS] query [SEP] w w [SEP] = 6 tokens: the trailing "good" is cut
    assert encoder.logits([("query", "w w good"), ("query", "good w w")]).tolist() == [0.0, 2.0]


def test_cross_encoder_without_token_type_ids(tmp_path: Path) -> None:
    encoder = OnnxCrossEncoder(tiny_cross_encoder(tmp_path, token_types=False))
    assert encoder.logits([("good", "bad"), ("w", "good good")]).tolist() == [1.0, 4.0]


def test_cross_encoder_model_folder_errors(tmp_path: Path, model_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match="no model file"):
        OnnxCrossEncoder(tmp_path).rerank("q", ["t"])
    digest = hashlib.sha256((model_dir / "model.onnx").read_bytes()).hexdigest()
    assert OnnxCrossEncoder(model_dir, model_sha256=digest).rerank("q", ["good"])[0][0] == 0
    with pytest.raises(ConfigurationError, match="SHA-256"):
        OnnxCrossEncoder(model_dir, model_sha256="0" * 64).rerank("q", ["t"])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.onnx").write_bytes(b"not a model")
    (broken / "tokenizer.json").write_text((model_dir / "tokenizer.json").read_text())
    with pytest.raises(ConfigurationError, match="does not load"):
        OnnxCrossEncoder(broken).rerank("q", ["t"])


def test_logit_shapes() -> None:
    assert _to_logits(np.array([[0.0, 2.0], [1.0, -1.0]]), 2).tolist() == [2.0, -2.0]
    assert _to_logits(np.array([0.5, 1.5]), 2).tolist() == [0.5, 1.5]
    with pytest.raises(EmbeddingError, match="shape"):
        _to_logits(np.zeros((2, 3)), 2)


def test_rank_and_checked_ranking() -> None:
    assert rank([0.1, 0.9, 0.9, 0.5]) == [(1, 0.9), (2, 0.9), (3, 0.5), (0, 0.1)]
    assert rank([0.1, 0.9], top_n=1) == [(1, 0.9)]
    assert checked_ranking([(2, 0.1), (0, 0.7)], 3, None) == [(0, 0.7), (2, 0.1)]
    for bad in ([(3, 0.1)], [(0, 0.1), (0, 0.2)], [(-1, 0.0)], [(0, float("nan"))]):
        with pytest.raises(EmbeddingError):
            checked_ranking(bad, 3, None)
    with pytest.raises(EmbeddingError):
        checked_ranking([(True, 0.1)], 3, None)
    with pytest.raises(EmbeddingError):
        rank([float("inf")])


# -- the helper the retriever applies ------------------------------------------------------
def _hits(texts: Sequence[str]) -> list[SearchHit]:
    hits = []
    for i, text in enumerate(texts):
        chunk = Chunk(
            id=Chunk.make_id(f"d{i}", 0),
            document_id=f"d{i}",
            source="s",
            ordinal=0,
            text=text,
            token_count=1,
            acl=Acl(allow=frozenset({"group:a"})),
            citation=Citation(document_id=f"d{i}", uri=f"file:///{i}", title=str(i)),
        )
        hits.append(SearchHit(chunk=chunk, score=1.0 / (i + 1)))
    return hits


class _Broken:
    model_id = "broken"

    def __init__(self, ranking: Ranking | None) -> None:
        self.ranking = ranking

    def rerank(self, query: str, texts: Sequence[str], top_n: int | None = None) -> Ranking:
        if self.ranking is None:
            raise EmbeddingError("model down")
        return self.ranking


def test_rerank_hits_reorders_a_subset_of_what_it_is_given(model_dir: Path) -> None:
    hits = _hits(PASSAGES)
    out = rerank_hits(OnnxCrossEncoder(model_dir), "q", hits, 3)
    assert [h.chunk.text for h in out] == [PASSAGES[i] for i in EXPECTED_ORDER[:3]]
    assert {h.chunk.id for h in out} <= {h.chunk.id for h in hits}
    assert out[0].score == pytest.approx(1 / (1 + np.exp(-6)))
    assert rerank_hits(OnnxCrossEncoder(model_dir), "q", [], 3) == []


def test_rerank_hits_falls_back_or_raises() -> None:
    hits = _hits(["a", "b", "c"])
    assert rerank_hits(_Broken(None), "q", hits, 2) == hits[:2]
    with pytest.raises(EmbeddingError):
        rerank_hits(_Broken(None), "q", hits, 2, on_error="raise")
    # a ranking that points outside the candidates never reaches the user
    assert rerank_hits(_Broken([(7, 1.0), (0, 0.5)]), "q", hits, 2) == hits[:2]


def test_async_variant(model_dir: Path) -> None:
    ranking = asyncio.run(arerank(OnnxCrossEncoder(model_dir), "q", PASSAGES, 2))
    assert [i for i, _ in ranking] == EXPECTED_ORDER[:2]


def test_build_reranker(model_dir: Path) -> None:
    assert build_reranker(RerankSettings()) is None
    local = build_reranker(RerankSettings(provider="local", local={"model_dir": model_dir}))
    assert isinstance(local, OnnxCrossEncoder)
    with pytest.raises(ConfigurationError, match="model_dir"):
        build_reranker(RerankSettings(provider="local"))
    tei = build_reranker(RerankSettings(provider="tei", tei={"url": "http://127.0.0.1:1"}))
    assert isinstance(tei, TEIReranker) and tei.model_id == "tei/reranker"
    bedrock = build_reranker(
        RerankSettings(provider="bedrock", bedrock={"model_id": "cohere.rerank-v3-5:0"})
    )
    assert isinstance(bedrock, BedrockReranker)
    assert bedrock.model_id == "bedrock/cohere.rerank-v3-5:0"


# -- Bedrock Rerank over the loopback bedrock-agent-runtime ---------------------------------
@pytest.fixture
def _fake_aws(monkeypatch: pytest.MonkeyPatch) -> None:
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


DOCS = [
    "The Q3 budget was approved in July.",
    "Vacation days: every employee gets 25 vacation days a year.",
    "Parking rules for the main office.",
    "How many vacation days carry over? Up to five days.",
]


def _fast_caller(attempts: int = 5) -> ResilientCaller:
    return ResilientCaller(
        AdaptiveConcurrency(2, 1, 4),
        CircuitBreaker(threshold=50),
        RetryPolicy(max_attempts=attempts, backoff_seconds=0.001, backoff_max_seconds=0.01),
    )


@pytest.mark.usefixtures("_fake_aws")
def test_bedrock_rerank_wire_format() -> None:
    query = "how many vacation days"
    with AwsStub() as stub:
        reranker = BedrockReranker("amazon.rerank-v1:0", region="us-west-2", endpoint_url=stub.url)
        ranking = reranker.rerank(query, DOCS, top_n=3)
    scores = [overlap_score(query, d) for d in DOCS]
    assert ranking == sorted(((i, s) for i, s in enumerate(scores)), key=lambda p: -p[1])[:3]
    (request,) = stub.state.requests
    assert request.path == "/rerank"
    assert request.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/")
    assert "/us-west-2/bedrock/aws4_request" in request.headers["Authorization"]
    golden = json.loads((GOLDEN / "bedrock_rerank_request.json").read_text())
    assert request.body == golden, "request body differs from tests/golden"
    assert (reranker.units_billed, reranker.calls) == (1, 1)


@pytest.mark.usefixtures("_fake_aws")
def test_bedrock_rerank_pages_slices_and_meters(monkeypatch: pytest.MonkeyPatch) -> None:
    import rag.rerank.bedrock as bedrock

    monkeypatch.setattr(bedrock, "MAX_SOURCES", 100)  # the API's 1,000, scaled down
    texts = [f"doc {i} about vacation" if i % 7 == 0 else f"doc {i}" for i in range(150)]
    ledger = UsageLedger()
    with AwsStub(StubConfig(rerank_page_size=40)) as stub:
        inner = BedrockReranker(
            "cohere.rerank-v3-5:0",
            model_arn="arn:aws:bedrock:us-east-1::foundation-model/cohere.rerank-v3-5:0",
            endpoint_url=stub.url,
            additional_model_fields={"max_tokens_per_doc": 512},
        )
        ranking = MeteredReranker(inner, ledger, tenant="acme").rerank("vacation doc", texts)
    assert len(ranking) == 150 and sorted(i for i, _ in ranking) == list(range(150))
    assert all(i % 7 == 0 for i, _ in ranking[:22])  # both words, from either slice
    sizes = sorted(len(r.body["sources"]) for r in stub.state.requests)
    assert sizes == [50, 50, 100, 100, 100]  # 2 slices; pages of 40 re-send the request
    tokens = {r.body.get("nextToken") for r in stub.state.requests}
    assert tokens == {None, "40", "80"}
    config = stub.state.requests[0].body["rerankingConfiguration"]["bedrockRerankingConfiguration"]
    assert config["modelConfiguration"]["additionalModelRequestFields"] == {
        "max_tokens_per_doc": 512
    }
    ((key, usage),) = ledger.totals().items()
    assert key == ("query", "acme", "bedrock/cohere.rerank-v3-5:0")
    assert (usage.calls, usage.texts, usage.tokens) == (5, 150, 2)  # a unit: up to 100 docs
    report = ledger.report(RerankSettings().prices_per_1k_units)
    assert report[0]["cost_usd"] == pytest.approx(2 / 1000 * 2.0)


@pytest.mark.usefixtures("_fake_aws")
def test_bedrock_rerank_throttling_is_retried_under_the_limiter() -> None:
    caller = _fast_caller(attempts=30)
    with AwsStub(StubConfig(throttle_share=0.5, error_share=0.1, seed=3)) as stub:
        reranker = BedrockReranker(region="us-east-1", endpoint_url=stub.url, caller=caller)
        rankings = [reranker.rerank(f"vacation {i}", DOCS, top_n=2) for i in range(4)]
    assert all(r[0][0] in (1, 3) for r in rankings)
    assert stub.state.throttled > 0 and caller.stats.throttled == stub.state.throttled
    assert stub.state.ok == 4 and reranker.calls == 4


@pytest.mark.usefixtures("_fake_aws")
def test_bedrock_rerank_errors_are_translated() -> None:
    with AwsStub() as stub:
        reranker = BedrockReranker(
            model_arn="not-an-arn", endpoint_url=stub.url, region="us-east-1", caller=_fast_caller()
        )
        with pytest.raises(EmbeddingError, match="ValidationException"):
            reranker.rerank("q", DOCS)
        assert len(stub.state.requests) == 1  # a validation error is final: no retries
    with AwsStub(StubConfig(error_share=1.0)) as stub:
        reranker = BedrockReranker(region="us-east-1", endpoint_url=stub.url, caller=_fast_caller())
        with pytest.raises(EmbeddingError, match="still failing after 5 attempts"):
            reranker.rerank("q", DOCS)
        assert len(stub.state.requests) == 5


# -- the TEI client against our own server ---------------------------------------------------
@pytest.fixture
def rerank_server(model_dir: Path) -> Iterator[tuple[str, Any]]:
    import uvicorn

    from rag.serve import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(HashEmbedder(8), max_wait_ms=20, reranker=OnnxCrossEncoder(model_dir))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}", app
    server.should_exit = True
    thread.join(5)


def test_tei_reranker_against_our_server(rerank_server: tuple[str, Any], model_dir: Path) -> None:
    url, app = rerank_server
    texts = PASSAGES * 3
    client = TEIReranker(url, batch_size=4, max_concurrency=4)
    ranking = client.rerank("good query", texts, top_n=5)
    assert ranking == OnnxCrossEncoder(model_dir).rerank("good query", texts, top_n=5)
    assert client.calls == 5  # 18 texts in batches of 4
    assert app.state.rerank_batcher.stats.texts == 18
    raw = TEIReranker(url, raw_scores=True).rerank("q", ["good good", "bad"])
    assert raw == [(0, 4.0), (1, -1.0)]


def test_tei_reranker_status_codes() -> None:
    import httpx

    replies = iter([httpx.Response(429), httpx.Response(503), httpx.Response(200, json=[])])

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert body == {
            "query": "q",
            "texts": ["a", " "],
            "raw_scores": False,
            "return_text": False,
            "truncate": True,
        }
        reply = next(replies)
        if reply.status_code == 200:
            return httpx.Response(
                200, json=[{"index": 1, "score": 0.2}, {"index": 0, "score": 0.9}]
            )
        return reply

    caller = _fast_caller()
    client = httpx.Client(transport=httpx.MockTransport(answer))
    reranker = TEIReranker("http://tei", client=client, caller=caller)
    assert reranker.rerank("q", ["a", ""]) == [(0, 0.9), (1, 0.2)]
    assert (caller.stats.throttled, caller.stats.failed) == (1, 1)

    def partial(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=[{"index": 0, "score": 0.9}])

    short = TEIReranker("http://tei", client=httpx.Client(transport=httpx.MockTransport(partial)))
    with pytest.raises(EmbeddingError, match="scored 1 of 2"):
        short.rerank("q", ["a", "b"])

    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(424, json={"error": "not a reranker", "error_type": "Backend"})

    refused = TEIReranker("http://tei", client=httpx.Client(transport=httpx.MockTransport(refuse)))
    with pytest.raises(EmbeddingError, match="424"):
        refused.rerank("q", ["a"])
