"""Loopback HTTP servers that speak the bedrock-runtime, bedrock-agent-runtime (``Rerank``) and
sagemaker-runtime wire protocols (REST-JSON), so boto3's real client code, signing and
serialization run in tests.

Responses are deterministic: embeddings of each input (the hash embedder), so a test can check
every returned vector, and rerank scores from word overlap with the query (:func:`overlap_score`).
Faults (throttling, 5xx, timeouts) and a token-bucket quota are injected on request.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote

from rag.embeddings.hashing import HashEmbedder
from rag.testing.loopback import LoopbackServer


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class StubConfig:
    dimension: int = 1024
    throttle_share: float = 0.0
    error_share: float = 0.0
    timeout_share: float = 0.0
    timeout_sleep: float = 1.0
    quota_per_second: float | None = None  # token bucket of calls
    burst: float = 1.0
    latency: float = 0.0  # seconds each successful call takes
    seed: int = 0
    rerank_page_size: int | None = None  # Rerank answers in pages (nextToken) of this many


@dataclass
class StubState:
    requests: list[Recorded] = field(default_factory=list)
    delivered: dict[str, int] = field(default_factory=dict)  # text -> successful responses
    ok: int = 0
    throttled: int = 0
    errors: int = 0
    timeouts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Bucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.capacity, self.tokens = rate, burst, burst
        self.at = time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            return False


class AwsStub(LoopbackServer):
    def __init__(self, config: StubConfig | None = None) -> None:
        self.config = config or StubConfig()
        self.state = StubState()
        self._rng = random.Random(self.config.seed)  # noqa: S311 - fault injection
        self._bucket = (
            _Bucket(self.config.quota_per_second, self.config.burst)
            if self.config.quota_per_second
            else None
        )
        self._listen(self._handler())

    def _verdict(self) -> str:
        with self.state.lock:
            if self._bucket is not None and not self._bucket.take():
                self.state.throttled += 1
                return "throttle"
            roll = self._rng.random()
            c = self.config
            if roll < c.throttle_share:
                self.state.throttled += 1
                return "throttle"
            if roll < c.throttle_share + c.error_share:
                self.state.errors += 1
                return "error"
            if roll < c.throttle_share + c.error_share + c.timeout_share:
                self.state.timeouts += 1
                return "timeout"
            return "ok"

    def respond(
        self, path: str, body: dict[str, Any]
    ) -> tuple[int, dict[str, str], Any, list[str]]:
        hasher = HashEmbedder(self.config.dimension)
        if path.startswith("/model/"):
            model = unquote(path.split("/")[2])
            if "titan" in model:
                text = body["inputText"]
                vector = hasher.embed_batch([text])[0].tolist()
                return (
                    200,
                    {},
                    {"embedding": vector, "inputTextTokenCount": len(text.split())},
                    [text],
                )
            texts = body["texts"]
            vectors = hasher.embed_batch(texts).tolist()
            return (
                200,
                {},
                {
                    "id": "x",
                    "embeddings": vectors,
                    "texts": texts,
                    "response_type": "embeddings_floats",
                },
                texts,
            )
        if path == "/rerank":
            return self._rerank(body)
        if path.startswith("/endpoints/"):
            texts = list(body.get("inputs") or body.get("text_inputs") or [])
            vectors = hasher.embed_batch(texts).tolist()
            payload = {"embedding": vectors} if "text_inputs" in body else vectors
            return 200, {}, payload, texts
        return 404, {}, {"message": "not found"}, []

    def _rerank(self, body: dict[str, Any]) -> tuple[int, dict[str, str], Any, list[str]]:
        """bedrock-agent-runtime ``Rerank``: validates the request as the service does, scores
        each source by word overlap with the query, pages with ``nextToken`` if configured."""
        invalid = (400, {"x-amzn-ErrorType": "ValidationException"})
        try:
            (query,) = body["queries"]
            text = query["textQuery"]["text"]
            sources = [s["inlineDocumentSource"]["textDocument"]["text"] for s in body["sources"]]
            config = body["rerankingConfiguration"]["bedrockRerankingConfiguration"]
            arn = config["modelConfiguration"]["modelArn"]
            wanted = int(config.get("numberOfResults", len(sources)))
        except (KeyError, TypeError, ValueError):
            return *invalid, {"message": "malformed Rerank request"}, []
        if query.get("type") != "TEXT" or not 1 <= len(sources) <= 1000 or not text:
            return *invalid, {"message": "queries/sources out of bounds"}, []
        if not arn.startswith("arn:aws:bedrock:") or "foundation-model/" not in arn:
            return *invalid, {"message": f"invalid modelArn {arn}"}, []
        if not 1 <= wanted <= 1000:
            return *invalid, {"message": "numberOfResults out of bounds"}, []
        scores = [overlap_score(text, source) for source in sources]
        order = sorted(range(len(sources)), key=lambda i: (-scores[i], i))[:wanted]
        start = int(body.get("nextToken") or 0)
        size = self.config.rerank_page_size or len(order)
        page = order[start : start + size]
        payload: dict[str, Any] = {
            "results": [{"index": i, "relevanceScore": scores[i]} for i in page]
        }
        if start + size < len(order):
            payload["nextToken"] = str(start + size)
        return 200, {}, payload, sources if start == 0 else []

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.loads(raw or b"{}")
                with stub.state.lock:
                    stub.state.requests.append(Recorded(self.path, dict(self.headers), body))
                verdict = stub._verdict()
                if verdict == "timeout":
                    time.sleep(stub.config.timeout_sleep)
                    self._send(
                        500, {"x-amzn-ErrorType": "InternalServerException"}, {"message": "late"}
                    )
                    return
                if verdict == "throttle":
                    self._send(
                        429,
                        {"x-amzn-ErrorType": "ThrottlingException"},
                        {"message": "Too many requests, please wait before trying again."},
                    )
                    return
                if verdict == "error":
                    self._send(
                        500,
                        {"x-amzn-ErrorType": "InternalServerException"},
                        {"message": "injected"},
                    )
                    return
                if stub.config.latency:
                    time.sleep(stub.config.latency)
                status, headers, payload, texts = stub.respond(self.path, body)
                if status == 200:
                    with stub.state.lock:
                        stub.state.ok += 1
                        for t in texts:
                            stub.state.delivered[t] = stub.state.delivered.get(t, 0) + 1
                self._send(status, headers, payload)

            def _send(self, status: int, headers: dict[str, str], payload: Any) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler


def overlap_score(query: str, text: str) -> float:
    """The stand-in's relevance: the share of the query's words found in ``text`` (0..1)."""
    words = set(re.findall(r"\w+", query.lower()))
    if not words:
        return 0.0
    return len(words & set(re.findall(r"\w+", text.lower()))) / len(words)
