"""``rag serve-embeddings``: an HTTP model server running the local models with dynamic batching.

Routes:

- ``POST /embed`` (text-embeddings-inference): ``{"inputs": str | [str]}`` -> ``[[float]]``;
- ``POST /v1/embeddings`` (OpenAI): ``{"input": str | [str], "model", "encoding_format"}`` ->
  ``{"object": "list", "data": [{"object": "embedding", "index", "embedding"}], "model",
  "usage": {"prompt_tokens", "total_tokens"}}`` (``encoding_format: base64`` as OpenAI's own
  client asks for it: little-endian float32);
- ``POST /rerank`` (text-embeddings-inference), when a cross-encoder is loaded:
  ``{"query", "texts", "raw_scores", "return_text"}`` -> ``[{"index", "score", "text"?}]`` best
  first (424 without a cross-encoder, as TEI answers for an embedding model);
- ``GET /health``, ``GET /info``, and ``GET /metrics`` (Prometheus: requests by route and status,
  request latency, model batch sizes and run time, queue depth).

Requests wait in a queue per model; one worker takes up to ``max_batch`` inputs (or what arrived
within ``max_wait_ms``), runs the model once in a thread, and answers every request in the batch.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
import orjson

from rag.embeddings.base import Embedder
from rag.errors import ConfigurationError
from rag.rerank import PairScorer, rank, sigmoid

log = logging.getLogger(__name__)

T = TypeVar("T")

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServerMetrics:
    """The server's Prometheus metrics, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "rag_serve_requests",
            "HTTP requests by route and status code.",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "rag_serve_request_seconds",
            "Time from request to response, by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inputs = Counter(
            "rag_serve_inputs",
            "Texts (embed) or pairs (rerank) received.",
            ["model"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "rag_serve_batch_size",
            "Inputs per model run (dynamic batches across requests).",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.model_seconds = Histogram(
            "rag_serve_model_seconds",
            "Time of one model run.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "rag_serve_queue_depth",
            "Inputs waiting for a model run.",
            ["model"],
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))


@dataclass
class _Job(Generic[T]):
    items: list[T]
    future: asyncio.Future[np.ndarray]


@dataclass
class BatchingStats:
    requests: int = 0
    texts: int = 0
    batches: int = 0
    batch_sizes: list[int] = field(default_factory=list)


class DynamicBatcher(Generic[T]):
    """Collects concurrent requests' inputs into model batches; ``run`` maps a list of inputs to
    an array whose first axis matches it (vectors for texts, logits for pairs)."""

    def __init__(
        self,
        run: Callable[[list[T]], np.ndarray],
        max_batch: int = 64,
        max_wait_ms: float = 5.0,
        *,
        name: str = "embed",
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.run = run
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.name = name
        self.metrics = metrics
        self.stats = BatchingStats()
        self.pending = 0  # inputs queued, not yet in a model run
        self._queue: asyncio.Queue[_Job[T]] | None = None
        self._worker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def submit(self, items: list[T]) -> np.ndarray:
        assert self._queue is not None, "batcher not started"
        self.stats.requests += 1
        self.stats.texts += len(items)
        if self.metrics is not None:
            self.metrics.inputs.labels(self.name).inc(len(items))
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._depth(len(items))
        await self._queue.put(_Job(items, future))
        return await future

    def _depth(self, change: int) -> None:
        self.pending += change
        if self.metrics is not None:
            self.metrics.queue_depth.labels(self.name).set(self.pending)

    async def _loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            size = len(jobs[0].items)
            deadline = loop.time() + self.max_wait
            while size < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), timeout)
                except TimeoutError:
                    break
                jobs.append(job)
                size += len(job.items)
            self._depth(-size)
            items = [item for job in jobs for item in job.items]
            started = time.perf_counter()
            try:
                out = await loop.run_in_executor(None, self.run, items)
            except Exception as exc:  # answer every waiting request with the failure
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            self.stats.batches += 1
            self.stats.batch_sizes.append(len(items))
            if self.metrics is not None:
                self.metrics.batch_size.labels(self.name).observe(len(items))
                self.metrics.model_seconds.labels(self.name).observe(time.perf_counter() - started)
            offset = 0
            for job in jobs:
                if not job.future.done():
                    job.future.set_result(out[offset : offset + len(job.items)])
                offset += len(job.items)


def create_app(
    embedder: Embedder,
    max_batch: int = 64,
    max_wait_ms: float = 5.0,
    max_client_batch: int = 512,
    *,
    reranker: PairScorer | None = None,
) -> Any:
    """The Starlette application. ``reranker``: a cross-encoder (e.g.
    :class:`rag.rerank.local.OnnxCrossEncoder`) served on ``/rerank``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    metrics = ServerMetrics()
    batcher: DynamicBatcher[str] = DynamicBatcher(
        lambda texts: embedder.embed_batch(texts), max_batch, max_wait_ms, metrics=metrics
    )
    pairs: DynamicBatcher[tuple[str, str]] | None = None
    if reranker is not None:
        pairs = DynamicBatcher(
            reranker.logits, max_batch, max_wait_ms, name="rerank", metrics=metrics
        )

    def instrumented(
        route: str, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            started = time.perf_counter()
            status = 500
            try:
                response = await handler(request)
                status = response.status_code
                return response
            finally:
                metrics.requests.labels(route, str(status)).inc()
                metrics.latency.labels(route).observe(time.perf_counter() - started)

        return wrapped

    def tei_error(message: str, status: int, kind: str = "Validation") -> JSONResponse:
        return JSONResponse({"error": message, "error_type": kind}, status_code=status)

    def openai_error(message: str, param: str | None = None) -> JSONResponse:
        error = {"message": message, "type": "invalid_request_error", "param": param, "code": None}
        return JSONResponse({"error": error}, status_code=400)

    async def json_body(request: Request) -> Any:
        try:
            return orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return None

    async def embed(request: Request) -> Response:
        body = await json_body(request)
        if not isinstance(body, dict) or "inputs" not in body:
            return tei_error("body must be JSON with 'inputs'", 422)
        texts = _texts(body["inputs"])
        if texts is None:
            return tei_error("inputs must be a string or a list of strings", 422)
        if len(texts) > max_client_batch:
            return tei_error(f"batch size {len(texts)} > {max_client_batch}", 413)
        vectors = await batcher.submit(texts) if texts else np.zeros((0, embedder.dimension))
        # orjson writes float32 arrays directly: JSON encoding is the server's hot path
        body_bytes = orjson.dumps(
            np.ascontiguousarray(vectors, dtype=np.float32), option=orjson.OPT_SERIALIZE_NUMPY
        )
        return Response(body_bytes, media_type="application/json")

    async def openai_embeddings(request: Request) -> Response:
        body = await json_body(request)
        if not isinstance(body, dict) or "input" not in body:
            return openai_error("body must be JSON with 'input'", "input")
        texts = _texts(body["input"])
        if texts is None:
            return openai_error(
                "input must be a string or a list of strings (token arrays are not supported)",
                "input",
            )
        if not texts or len(texts) > max_client_batch:
            return openai_error(f"input must hold 1 to {max_client_batch} strings", "input")
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            return openai_error("encoding_format must be 'float' or 'base64'", "encoding_format")
        dimensions = body.get("dimensions")
        if dimensions is not None and dimensions != embedder.dimension:
            return openai_error(
                f"this model has {embedder.dimension} dimensions, not {dimensions}", "dimensions"
            )
        vectors = np.ascontiguousarray(await batcher.submit(texts), dtype="<f4")
        tokens = _count_tokens(texts)
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": base64.b64encode(row.tobytes()).decode()
                if encoding == "base64"
                else row,
            }
            for i, row in enumerate(vectors)
        ]
        payload = {
            "object": "list",
            "data": data,
            "model": embedder.model_id,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return Response(
            orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
        )

    async def rerank(request: Request) -> Response:
        if pairs is None:
            return tei_error(
                "no reranker is loaded (start the server with a cross-encoder)", 424, "Backend"
            )
        body = await json_body(request)
        if not isinstance(body, dict):
            return tei_error("body must be JSON with 'query' and 'texts'", 422)
        query, texts = body.get("query"), _texts(body.get("texts"))
        if not isinstance(query, str) or not query or texts is None or not texts:
            return tei_error("'query' must be a non-empty string, 'texts' a list of strings", 422)
        if len(texts) > max_client_batch:
            return tei_error(f"batch size {len(texts)} > {max_client_batch}", 413)
        raw, with_text = body.get("raw_scores", False), body.get("return_text", False)
        if not isinstance(raw, bool) or not isinstance(with_text, bool):
            return tei_error("raw_scores and return_text must be booleans", 422)
        logits = await pairs.submit([(query, text) for text in texts])
        ranking = rank(logits if raw else sigmoid(logits))
        return JSONResponse(
            [
                {"index": i, "score": score, **({"text": texts[i]} if with_text else {})}
                for i, score in ranking
            ]
        )

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def info(request: Request) -> Response:
        return JSONResponse(
            {
                "model_id": embedder.model_id,
                "dimension": embedder.dimension,
                "reranker_model_id": reranker.model_id if reranker is not None else None,
                "max_batch_tokens": None,
                "max_client_batch_size": max_client_batch,
                "max_concurrent_requests": None,
            }
        )

    async def prometheus(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await batcher.start()
        if pairs is not None:
            await pairs.start()
        try:
            yield
        finally:
            await batcher.stop()
            if pairs is not None:
                await pairs.stop()

    app = Starlette(
        routes=[
            Route("/embed", instrumented("/embed", embed), methods=["POST"]),
            Route(
                "/v1/embeddings",
                instrumented("/v1/embeddings", openai_embeddings),
                methods=["POST"],
            ),
            Route("/rerank", instrumented("/rerank", rerank), methods=["POST"]),
            Route("/health", instrumented("/health", health)),
            Route("/info", instrumented("/info", info)),
            Route("/metrics", prometheus),
        ],
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.state.rerank_batcher = pairs
    app.state.metrics = metrics
    return app


def _texts(value: Any) -> list[str] | None:
    """A string or a list of strings as a list; None for anything else."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return value
    return None


def _count_tokens(texts: list[str]) -> int:
    """Tokens for the OpenAI ``usage`` block, counted with tiktoken (as the usage ledger does)."""
    from rag.tokens import get_encoding

    encoding = get_encoding("cl100k_base")
    return sum(len(encoding.encode(t, disallowed_special=())) for t in texts)


@dataclass
class Listener:
    """A server bound to its address (port 0 picks a free one), not yet serving."""

    server: Any
    sock: socket.socket
    url: str

    def run(self) -> None:
        """Serve until interrupted (or ``server.should_exit``)."""
        self.server.run(sockets=[self.sock])


def listen(
    app: Any, host: str = "127.0.0.1", port: int = 8080, log_level: str = "warning"
) -> Listener:
    """Bind ``host:port`` for ``app``; a port in use is a :class:`ConfigurationError`."""
    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc}") from exc
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level))
    return Listener(server, sock, f"http://{shown}:{bound}")


def serve(app: Any, host: str = "127.0.0.1", port: int = 8080, log_level: str = "warning") -> None:
    """Serve ``app`` and log the address it listens on (at INFO on ``rag.serve``, shown unless
    logging configures that logger otherwise)."""
    listener = listen(app, host, port, log_level)
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)
    routes = "POST /embed /v1/embeddings" + (
        " /rerank" if getattr(app.state, "rerank_batcher", None) is not None else ""
    )
    log.info("listening on %s (%s; GET /health /info /metrics)", listener.url, routes)
    listener.run()
