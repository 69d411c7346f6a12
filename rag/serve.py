"""``rag serve-embeddings``: an HTTP embedding server speaking the text-embeddings-inference API
(``POST /embed``, ``GET /health``, ``GET /info``), running the local model with dynamic batching.

Requests wait in a queue; a single worker takes up to ``max_batch`` texts (or what arrived within
``max_wait_ms``), runs the model once in a thread, and answers every request in the batch. The
model runs on the CPU, or on CUDA when ONNX Runtime has the CUDA provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from rag.embeddings.base import Embedder

log = logging.getLogger(__name__)


@dataclass
class _Job:
    texts: list[str]
    future: asyncio.Future[np.ndarray]


@dataclass
class BatchingStats:
    requests: int = 0
    texts: int = 0
    batches: int = 0
    batch_sizes: list[int] = field(default_factory=list)


class DynamicBatcher:
    """Collects concurrent requests into model batches."""

    def __init__(self, embedder: Embedder, max_batch: int = 64, max_wait_ms: float = 5.0) -> None:
        self.embedder = embedder
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.stats = BatchingStats()
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()

    async def embed(self, texts: list[str]) -> np.ndarray:
        assert self._queue is not None, "batcher not started"
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(texts, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            size = len(jobs[0].texts)
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
                size += len(job.texts)
            texts = [t for job in jobs for t in job.texts]
            try:
                vectors = await loop.run_in_executor(None, self.embedder.embed_batch, texts)
            except Exception as exc:  # answer every waiting request with the failure
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            self.stats.batches += 1
            self.stats.batch_sizes.append(len(texts))
            offset = 0
            for job in jobs:
                if not job.future.done():
                    job.future.set_result(vectors[offset : offset + len(job.texts)])
                offset += len(job.texts)


def create_app(
    embedder: Embedder, max_batch: int = 64, max_wait_ms: float = 5.0, max_client_batch: int = 512
) -> Any:
    """The Starlette application (TEI-compatible subset)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    batcher = DynamicBatcher(embedder, max_batch, max_wait_ms)

    async def embed(request: Request) -> Response:
        try:
            inputs = orjson.loads(await request.body())["inputs"]
        except Exception:
            return JSONResponse(
                {"error": "body must be JSON with 'inputs'", "error_type": "Validation"},
                status_code=422,
            )
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return JSONResponse(
                {
                    "error": "inputs must be a string or a list of strings",
                    "error_type": "Validation",
                },
                status_code=422,
            )
        if len(texts) > max_client_batch:
            return JSONResponse(
                {
                    "error": f"batch size {len(texts)} > {max_client_batch}",
                    "error_type": "Validation",
                },
                status_code=413,
            )
        batcher.stats.requests += 1
        batcher.stats.texts += len(texts)
        vectors = await batcher.embed(texts) if texts else np.zeros((0, embedder.dimension))
        # orjson writes float32 arrays directly: JSON encoding is the server's hot path
        body = orjson.dumps(
            np.ascontiguousarray(vectors, dtype=np.float32), option=orjson.OPT_SERIALIZE_NUMPY
        )
        return Response(body, media_type="application/json")

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def info(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "model_id": embedder.model_id,
                "dimension": embedder.dimension,
                "max_batch_tokens": None,
                "max_client_batch_size": max_client_batch,
                "max_concurrent_requests": None,
            }
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = Starlette(
        routes=[
            Route("/embed", embed, methods=["POST"]),
            Route("/health", health),
            Route("/info", info),
        ],
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    return app
