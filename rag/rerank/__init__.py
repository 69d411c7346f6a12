"""Reranking: a second stage that reorders the first stage's top candidates by a model's relevance
score for (query, text) pairs. Backends, one per module, behind the :class:`Reranker` protocol:
``local`` (an ONNX cross-encoder, in process), ``bi_encoder`` (an ONNX sentence-embedding model
re-scoring by cosine, in process), ``tei`` (a ``/rerank`` server) and ``bedrock``
(Bedrock's ``Rerank`` API).

A reranker only reorders (and cuts) what it is given: :func:`rerank_hits` maps its ranking back
onto the hits the store returned, so it can never add a chunk the user may not read.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from rag.errors import ConfigurationError, EmbeddingError, RagError
from rag.rerank.settings import RerankSettings

if TYPE_CHECKING:
    from rag.accounting import UsageLedger
    from rag.models import SearchHit

__all__ = [
    "MeteredReranker",
    "PairScorer",
    "Ranking",
    "RerankSettings",
    "Reranker",
    "arerank",
    "build_reranker",
    "checked_ranking",
    "rank",
    "rerank_hits",
    "sigmoid",
]

log = logging.getLogger(__name__)

Ranking = list[tuple[int, float]]
"""(index into the texts given, relevance score), best first."""


@runtime_checkable
class Reranker(Protocol):
    """Scores how well each text answers a query. Construction does no I/O."""

    @property
    def model_id(self) -> str:
        """Identifies the model (``bedrock/<id>``, ``tei/<name>``, ``onnx/<folder>``)."""
        ...

    def rerank(self, query: str, texts: Sequence[str], top_n: int | None = None) -> Ranking:
        """The ``top_n`` best texts (all when None) as (index, score), best first; ties keep
        the given order. Raises :class:`~rag.errors.EmbeddingError` when the model fails."""
        ...


@runtime_checkable
class PairScorer(Protocol):
    """A cross-encoder's raw relevance logits for (query, text) pairs: what
    ``rag serve-embeddings`` batches across requests for its ``/rerank`` route."""

    @property
    def model_id(self) -> str: ...

    def logits(self, pairs: Sequence[tuple[str, str]]) -> NDArray[np.float32]:
        """One logit per pair, shape (len(pairs),); higher is more relevant."""
        ...


def sigmoid(values: NDArray[np.floating]) -> NDArray[np.float32]:
    out: NDArray[np.float32] = (1.0 / (1.0 + np.exp(-np.asarray(values, np.float64)))).astype(
        np.float32
    )
    return out


def rank(scores: Sequence[float] | NDArray[np.floating], top_n: int | None = None) -> Ranking:
    """Indexes of ``scores`` best first (ties: lower index first), cut to ``top_n``."""
    values = [float(s) for s in scores]
    for value in values:
        if not math.isfinite(value):
            raise EmbeddingError("the reranker returned a score that is not a finite number")
    order = sorted(range(len(values)), key=lambda i: (-values[i], i))
    if top_n is not None:
        order = order[: max(top_n, 0)]
    return [(i, values[i]) for i in order]


def checked_ranking(pairs: Sequence[tuple[int, float]], count: int, top_n: int | None) -> Ranking:
    """A remote service's (index, score) pairs validated against ``count`` texts (each index in
    range, none twice), sorted best first and cut to ``top_n``."""
    scores: dict[int, float] = {}
    for index, score in pairs:
        if isinstance(index, bool) or not isinstance(index, int):
            raise EmbeddingError(f"the reranker returned index {index!r}, not an integer")
        if not 0 <= index < count or index in scores:
            raise EmbeddingError(f"the reranker returned index {index} for {count} texts")
        if not math.isfinite(float(score)):
            raise EmbeddingError("the reranker returned a score that is not a finite number")
        scores[index] = float(score)
    order = sorted(scores, key=lambda i: (-scores[i], i))
    if top_n is not None:
        order = order[: max(top_n, 0)]
    return [(i, scores[i]) for i in order]


async def arerank(
    reranker: Reranker, query: str, texts: Sequence[str], top_n: int | None = None
) -> Ranking:
    """:meth:`Reranker.rerank` without blocking the event loop (in a worker thread)."""
    return await asyncio.to_thread(reranker.rerank, query, list(texts), top_n)


def rerank_hits(
    reranker: Reranker,
    query: str,
    hits: Sequence[SearchHit],
    k: int,
    *,
    on_error: Literal["fallback", "raise"] = "fallback",
) -> list[SearchHit]:
    """Rerank the first stage's ``hits`` (already ACL-filtered, best first) and keep the best
    ``k``; each hit's score becomes the reranker's. The result is a subset of ``hits``, so
    reranking never widens what a user sees. With ``on_error="fallback"`` a failing reranker is
    logged and the first-stage order is returned."""
    if not hits or k <= 0:
        return []
    try:
        ranking = checked_ranking(
            reranker.rerank(query, [hit.chunk.text for hit in hits], top_n=k), len(hits), k
        )
    except RagError as exc:
        if on_error == "raise":
            raise
        log.warning("reranker %s failed, first-stage order kept: %s", reranker.model_id, exc)
        return list(hits[:k])
    return [hits[i].model_copy(update={"score": score}) for i, score in ranking]


class MeteredReranker:
    """Counts what reaches the reranking model into the usage ledger (as the embedders are
    counted): calls, texts, and in the ledger's ``tokens`` column the billed units that the
    backend reports (``units_billed``: a Bedrock query of up to 100 documents), priced by
    ``RerankSettings.prices_per_1k_units``; self-hosted backends report none."""

    def __init__(
        self, inner: Reranker, ledger: UsageLedger, source: str = "query", tenant: str = "-"
    ) -> None:
        self._inner = inner
        self._ledger = ledger
        self._source = source
        self._tenant = tenant

    @property
    def model_id(self) -> str:
        return self._inner.model_id

    def rerank(self, query: str, texts: Sequence[str], top_n: int | None = None) -> Ranking:
        before = int(getattr(self._inner, "units_billed", 0))
        calls_before = int(getattr(self._inner, "calls", 0))
        start = time.perf_counter()
        ranking = self._inner.rerank(query, texts, top_n)
        seconds = time.perf_counter() - start
        units = int(getattr(self._inner, "units_billed", 0)) - before
        calls = int(getattr(self._inner, "calls", 0)) - calls_before
        self._ledger.record(
            self._source,
            self._tenant,
            self.model_id,
            len(texts),
            units,
            seconds,
            calls if calls > 0 else (1 if texts else 0),
        )
        return ranking


def build_reranker(settings: RerankSettings) -> Reranker | None:
    """The reranker the settings name, or None for ``provider = "none"``. No I/O: models load
    and clients connect on first use."""
    if settings.provider == "none":
        return None
    if settings.provider == "bedrock":
        from rag.rerank.bedrock import BedrockReranker

        b = settings.bedrock
        return BedrockReranker(
            b.model_id,
            model_arn=b.model_arn,
            region=b.region,
            endpoint_url=b.endpoint_url,
            timeout_seconds=b.timeout_seconds,
            max_concurrency=b.max_concurrency,
            additional_model_fields=b.additional_model_fields,
        )
    if settings.provider == "tei":
        from rag.rerank.tei import TEIReranker

        t = settings.tei
        return TEIReranker(
            t.url,
            model_name=t.model_name,
            batch_size=t.batch_size,
            timeout_seconds=t.timeout_seconds,
            max_concurrency=t.max_concurrency,
            raw_scores=t.raw_scores,
        )
    if settings.provider == "bi_encoder":
        return _bi_encoder(settings)
    from rag.rerank.local import OnnxCrossEncoder

    local = settings.local
    if local.model_dir is None:
        raise ConfigurationError(
            "rerank.provider local needs rerank.local.model_dir (RAG_RERANK__LOCAL__MODEL_DIR): "
            "a folder with model.onnx and tokenizer.json"
        )
    return OnnxCrossEncoder(
        local.model_dir,
        max_sequence_tokens=local.max_sequence_tokens,
        batch_size=local.batch_size,
        threads=local.threads,
        device=local.device,
        model_sha256=local.model_sha256,
    )


def _bi_encoder(settings: RerankSettings) -> Reranker:
    from rag.rerank.bi_encoder import BiEncoderReranker, OnnxSentenceEncoder, PassageCache

    b = settings.bi_encoder
    if b.model_dir is None:
        raise ConfigurationError(
            "rerank.provider bi_encoder needs rerank.bi_encoder.model_dir "
            "(RAG_RERANK__BI_ENCODER__MODEL_DIR): a folder with model.onnx and tokenizer.json; "
            "scripts/fetch-rerank-model.sh fetches bge-small-en-v1.5 into "
            ".cache/models/bge-small-en-v1.5-q"
        )
    encoder = OnnxSentenceEncoder(
        b.model_dir,
        pooling=b.pooling,
        query_prefix=b.query_prefix,
        passage_prefix=b.passage_prefix,
        max_sequence_tokens=b.max_sequence_tokens,
        batch_size=b.batch_size,
        threads=b.threads,
        device=b.device,
        model_sha256=b.model_sha256,
    )
    return BiEncoderReranker(
        encoder,
        fuse=b.fuse,
        fuse_k=b.fuse_k,
        fuse_weight=b.fuse_weight,
        cache=PassageCache(b.cache_entries, b.cache_path),
    )
