"""The core retriever: a query and a user in, ranked chunks the user may read out.

Per call: the ``mode`` (``dense``, ``bm25``, ``hybrid``), ``k``, ``min_score``, a metadata
``filter`` (:mod:`rag.filters`, AND-ed with the ACL inside the store's query), ``rerank`` and
context ``expand`` (``neighbors`` or ``section``); the defaults come from the settings.

What a score means, and so what ``min_score`` compares with, depends on how the hit was ranked:

- ``dense``: the cosine similarity of query and chunk vectors, in [-1, 1];
- ``bm25``: the store's BM25 relevance, >= 0 and unbounded, comparable only within one index;
- ``hybrid``: the reciprocal rank fusion score, the sum over the BM25 and dense rankings of
  1 / (60 + rank): at most 2/61 = 0.0328 (first in both), 1/61 = 0.0164 for first in one only;
  it says how high a chunk ranked, not how relevant it is;
- reranked (any mode, with a reranker): the reranker's relevance, in [0, 1] for Bedrock, TEI
  and the local cross-encoder (the sigmoid of its logit; TEI with ``raw_scores``: the logit).

When a reranker fails and ``rerank.on_error`` is ``fallback``, the first-stage order and scores
come back and ``min_score`` (meant for the reranker's scale) is not applied.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypedDict, TypeVar, Unpack

from rag import telemetry
from rag.audit import AuditHit, AuditRecord, AuditSink, Feedback, build_audit_sink
from rag.audit.base import principals_digest, query_digest
from rag.config import Settings
from rag.embeddings import build_embedder
from rag.embeddings.base import Embedder, Vectors, embed_query
from rag.errors import (
    AuditError,
    ConfigurationError,
    EmbeddingError,
    IndexNotFoundError,
    InvalidRequestError,
    RagError,
    StoreError,
)
from rag.identity import UserContext, canonical_id, require_user
from rag.models import Chunk, SearchHit, epoch_ms
from rag.resolve import IdentityResolver
from rag.retrieval.expand import EXPANSIONS, Expand, Passage, context_ids, fetch_chunks, passages
from rag.stores import build_store
from rag.stores.base import IndexInfo, TextSearchStore, VectorStore, check_compatible
from rag.stores.limits import checked_k

if TYPE_CHECKING:
    from rag.filters import Filter
    from rag.rerank import Reranker

log = logging.getLogger(__name__)

Mode = Literal["dense", "bm25", "hybrid"]
MODES: tuple[Mode, ...] = ("dense", "bm25", "hybrid")
_T = TypeVar("_T")
_CONCURRENCY = 8  # queries of one batch in flight at once (aretrieve_many)


class Options(TypedDict, total=False):
    """Per-call query options; each one left out (or None) takes the retriever's default."""

    mode: Mode
    """``dense``, ``bm25`` or ``hybrid`` (the latter two need a store with text search)."""
    min_score: float | None
    """Drop hits scoring below this (see the module docstring for each mode's scale);
    ``float("-inf")`` keeps every hit whatever the default."""
    filter: Filter | None
    """A metadata filter, AND-ed with the ACL filter inside the store's query."""
    rerank: bool | None
    """Rerank the top ``rerank_candidates`` first-stage hits; None: on when a reranker is set."""
    expand: Expand | None
    """Add each hit's ``neighbors`` (previous and next chunk) or the rest of its ``section``
    (up to ``section_window`` chunks either side); None: no expansion."""
    max_acl_age: timedelta | None
    """Only chunks whose ACL the source confirmed this recently."""


def _given(value: _T | None, default: _T | None) -> _T | None:
    return default if value is None else value


class AsyncSearchStore(Protocol):
    """A store's read path on an event loop (:class:`rag.stores.opensearch_async.
    AsyncOpenSearchStore`): the searches of :class:`VectorStore` and
    :class:`TextSearchStore`, and the ACL-filtered fetch of context chunks, awaited."""

    async def index_info(self) -> IndexInfo | None: ...

    async def count(self) -> int: ...

    async def search(
        self,
        vector: Vectors,
        principals: AbstractSet[str],
        k: int,
        *,
        filter: Filter | None = None,
        acl_fresh_after: datetime | None = None,
    ) -> list[SearchHit]: ...

    async def search_text(
        self,
        text: str,
        principals: AbstractSet[str],
        k: int,
        *,
        filter: Filter | None = None,
        acl_fresh_after: datetime | None = None,
    ) -> list[SearchHit]: ...

    async def search_hybrid(
        self,
        text: str,
        vector: Vectors,
        principals: AbstractSet[str],
        k: int,
        *,
        filter: Filter | None = None,
        acl_fresh_after: datetime | None = None,
    ) -> list[SearchHit]: ...

    async def fetch_chunks(
        self,
        ids: Sequence[str],
        principals: AbstractSet[str],
        *,
        acl_fresh_after: datetime | None = None,
    ) -> list[Chunk]: ...

    async def aclose(self) -> None:
        """Close the running event loop's connections."""
        ...


@dataclass(frozen=True)
class Retrieval:
    """What one retrieval returned, and the id of its audit record (None when auditing is off).

    ``hits`` are the ranked chunks the search matched; ``passages`` the same hits with their
    context expansion, merged per document in reading order (without expansion: one passage
    per hit)."""

    hits: list[SearchHit]
    audit_id: str | None
    passages: list[Passage] = field(default_factory=list)

    @property
    def chunks(self) -> list[SearchHit]:
        """Every chunk to show, passage by passage in reading order (without expansion: the
        hits); a context chunk carries its passage's score."""
        found = {h.chunk.id: h for h in self.hits}
        return [
            found[c.id] if c.id in p.hit_ids else SearchHit(chunk=c, score=p.score)
            for p in self.passages
            for c in p.chunks
        ]


@dataclass(frozen=True)
class _Query:
    """One query with every option resolved."""

    text: str
    context: UserContext
    principals: frozenset[str]
    k: int
    depth: int
    mode: Mode
    min_score: float | None
    filter: Filter | None
    rerank: bool
    expand: Expand | None
    fresh_after: datetime | None
    started: float

    def store_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"acl_fresh_after": self.fresh_after}
        if self.filter is not None:
            kwargs["filter"] = self.filter
        return kwargs


class Retriever:
    """Permission-aware retrieval over a store. Deny by default: no user, no results.

    The store applies the ACL filter inside every search (and context fetch), AND-ed with any
    metadata filter. Every chunk returned is checked once more against the user's principals;
    one that fails is a store bug, and the whole answer is refused. A reranker only reorders
    and cuts the hits the store returned.

    Retrieval only reads: it never creates an index. A store with nothing ingested raises
    :class:`~rag.errors.IndexNotFoundError`; an index built with another embedding model,
    :class:`~rag.errors.EmbeddingMismatchError`.

    Async (:meth:`aretrieve`, :meth:`asearch`, :meth:`aretrieve_many`): natively async on the
    store when an ``async_store`` is given (OpenSearch: ``AsyncOpenSearch``); otherwise the
    store's calls run in a worker thread (``asyncio.to_thread``; LanceDB). The embedding model,
    the reranker, the directory and the audit sink are synchronous and always run in a worker
    thread.
    """

    def __init__(
        self,
        store: VectorStore,
        embedder: Embedder,
        top_k: int = 5,
        min_score: float | None = None,
        mode: Mode = "dense",
        *,
        case_sensitive_principals: bool = False,
        audit: AuditSink | None = None,
        audit_query_text: bool = False,
        audit_fail_closed: bool = True,
        max_acl_age: timedelta | None = None,
        resolver: IdentityResolver | None = None,
        reranker: Reranker | None = None,
        rerank_candidates: int = 50,
        rerank_on_error: Literal["fallback", "raise"] = "fallback",
        section_window: int = 8,
        async_store: AsyncSearchStore | None = None,
    ) -> None:
        self._store = store
        self._embedder = embedder
        self._top_k = checked_k(top_k)
        self._min_score = min_score
        self._mode = self._checked_mode(mode)
        self._case_sensitive = case_sensitive_principals
        self._audit = audit
        self._audit_text = audit_query_text
        self._audit_fail_closed = audit_fail_closed
        self._max_acl_age = max_acl_age
        self._resolver = resolver
        self._reranker = reranker
        self._candidates = checked_k(rerank_candidates)
        self._rerank_on_error = rerank_on_error
        if section_window < 1:
            raise ConfigurationError(f"section_window must be at least 1, got {section_window}")
        self._section_window = section_window
        self._async_store = async_store
        self._checked = False

    # -- synchronous -------------------------------------------------------------------------
    def retrieve(
        self, query: str, user: UserContext | None, k: int | None = None, **options: Unpack[Options]
    ) -> list[SearchHit]:
        """The ``k`` chunks that best match ``query`` among those ``user`` may read; with
        ``expand``, each followed or preceded by its context (:attr:`Retrieval.chunks`)."""
        return self.search(query, user, k, **options).chunks

    def search(
        self, query: str, user: UserContext | None, k: int | None = None, **options: Unpack[Options]
    ) -> Retrieval:
        """:meth:`retrieve`, with the passages and the id of the audit record (for
        :meth:`feedback`)."""
        q = self._query(query, self._identity(user), k, options)
        self._check_index()
        vector = self._embed([q.text])[0] if q.mode != "bm25" else None
        return self._traced(q, vector)

    def retrieve_many(
        self,
        queries: Sequence[str],
        user: UserContext | None,
        k: int | None = None,
        **options: Unpack[Options],
    ) -> list[list[SearchHit]]:
        """:meth:`retrieve` for each query, as one user: the identity is resolved once and the
        queries are embedded in one model call; each query is audited on its own."""
        return [r.chunks for r in self.search_many(queries, user, k, **options)]

    def search_many(
        self,
        queries: Sequence[str],
        user: UserContext | None,
        k: int | None = None,
        **options: Unpack[Options],
    ) -> list[Retrieval]:
        """:meth:`search` for each query (see :meth:`retrieve_many`)."""
        context = self._identity(user)
        planned = [self._query(text, context, k, options) for text in queries]
        if not planned:
            return []
        self._check_index()
        vectors = self._embed([q.text for q in planned]) if planned[0].mode != "bm25" else None
        return [
            self._traced(q, vectors[i] if vectors is not None else None)
            for i, q in enumerate(planned)
        ]

    def _traced(self, q: _Query, vector: Vectors | None) -> Retrieval:
        """One query's search in a ``rag.retrieve`` span (no query text, no principals)."""
        with telemetry.span("retrieve", mode=q.mode, k=q.k, rerank=q.rerank) as span:
            result = self._finish(q, self._first_stage(q, vector))
            span.set(hits=len(result.hits), context=len(result.chunks) - len(result.hits))
        return result

    def _first_stage(self, q: _Query, vector: Vectors | None) -> list[SearchHit]:
        kwargs = q.store_kwargs()
        if q.mode == "dense":
            assert vector is not None
            return self._store.search(vector, q.principals, q.depth, **kwargs)
        store = self._text_store()
        if q.mode == "bm25":
            return store.search_text(q.text, q.principals, q.depth, **kwargs)
        assert vector is not None
        return store.search_hybrid(q.text, vector, q.principals, q.depth, **kwargs)

    def _finish(self, q: _Query, hits: list[SearchHit]) -> Retrieval:
        hits = self._ranked(q, hits)
        context: list[Chunk] = []
        if q.expand is not None and hits:
            ids = context_ids(hits, q.expand, self._section_window)
            context = fetch_chunks(self._store, ids, q.principals, acl_fresh_after=q.fresh_after)
            self._verify(q, context)
        return self._result(q, hits, context)

    def _ranked(self, q: _Query, hits: list[SearchHit]) -> list[SearchHit]:
        """The first stage's hits checked, reranked (when on), cut to k and thresholded."""
        self._verify(q, [h.chunk for h in hits])
        if not q.rerank or not hits:
            return self._thresholded(q, hits[: q.k])
        from rag.rerank import rerank_hits

        assert self._reranker is not None
        try:
            reranked = rerank_hits(self._reranker, q.text, hits, q.k, on_error="raise")
        except RagError:
            if self._rerank_on_error == "raise":
                raise
            log.warning("reranker %s failed; first-stage order kept", self._reranker.model_id)
            return hits[: q.k]  # first-stage scores: min_score (the reranker's scale) not applied
        return self._thresholded(q, reranked)

    # -- asynchronous ------------------------------------------------------------------------
    async def aretrieve(
        self, query: str, user: UserContext | None, k: int | None = None, **options: Unpack[Options]
    ) -> list[SearchHit]:
        """:meth:`retrieve` on an event loop."""
        return (await self.asearch(query, user, k, **options)).chunks

    async def asearch(
        self, query: str, user: UserContext | None, k: int | None = None, **options: Unpack[Options]
    ) -> Retrieval:
        """:meth:`search` on an event loop."""
        (result,) = await self.asearch_many([query], user, k, **options)
        return result

    async def aretrieve_many(
        self,
        queries: Sequence[str],
        user: UserContext | None,
        k: int | None = None,
        **options: Unpack[Options],
    ) -> list[list[SearchHit]]:
        """:meth:`retrieve_many` on an event loop: the queries run concurrently (at most 8 at
        once), their answers in the order of ``queries``."""
        return [r.chunks for r in await self.asearch_many(queries, user, k, **options)]

    async def asearch_many(
        self,
        queries: Sequence[str],
        user: UserContext | None,
        k: int | None = None,
        **options: Unpack[Options],
    ) -> list[Retrieval]:
        """:meth:`search_many` on an event loop."""
        context = require_user(user)
        if self._resolver is not None:
            context = await asyncio.to_thread(self._identity, context)
        planned = [self._query(text, context, k, options) for text in queries]
        if not planned:
            return []
        await self._acheck_index()
        vectors = None
        if planned[0].mode != "bm25":
            vectors = await asyncio.to_thread(self._embed, [q.text for q in planned])
        gate = asyncio.Semaphore(_CONCURRENCY)

        async def one(i: int, q: _Query) -> Retrieval:
            async with gate:
                return await self._afinish(q, vectors[i] if vectors is not None else None)

        return list(await asyncio.gather(*(one(i, q) for i, q in enumerate(planned))))

    async def aclose(self) -> None:
        """Close the async store's connections of the running event loop (call it before the
        loop ends, e.g. at an ASGI app's shutdown); a no-op without an async store."""
        if self._async_store is not None:
            await self._async_store.aclose()

    async def _afinish(self, q: _Query, vector: Vectors | None) -> Retrieval:
        with telemetry.span("retrieve", mode=q.mode, k=q.k, rerank=q.rerank) as span:
            result = await self._afinish_untraced(q, vector)
            span.set(hits=len(result.hits), context=len(result.chunks) - len(result.hits))
        return result

    async def _afinish_untraced(self, q: _Query, vector: Vectors | None) -> Retrieval:
        if self._async_store is None:
            return await asyncio.to_thread(lambda: self._finish(q, self._first_stage(q, vector)))
        store, kwargs = self._async_store, q.store_kwargs()
        if q.mode == "dense":
            assert vector is not None
            hits = await store.search(vector, q.principals, q.depth, **kwargs)
        elif q.mode == "bm25":
            hits = await store.search_text(q.text, q.principals, q.depth, **kwargs)
        else:
            assert vector is not None
            hits = await store.search_hybrid(q.text, vector, q.principals, q.depth, **kwargs)
        if q.rerank and hits:  # the reranker's call blocks: in a worker thread
            hits = await asyncio.to_thread(self._ranked, q, hits)
        else:
            hits = self._ranked(q, hits)
        context: list[Chunk] = []
        if q.expand is not None and hits:
            ids = context_ids(hits, q.expand, self._section_window)
            context = await store.fetch_chunks(ids, q.principals, acl_fresh_after=q.fresh_after)
            self._verify(q, context)
        return await asyncio.to_thread(self._result, q, hits, context)

    async def _acheck_index(self) -> None:
        if self._checked:
            return
        if self._async_store is None:
            await asyncio.to_thread(self._check_index)
            return
        existing = await self._async_store.index_info()
        if existing is None:
            await self._async_store.count()  # raises IndexNotFoundError naming where
            existing = await self._async_store.index_info()
            if existing is None:
                raise IndexNotFoundError("nothing ingested in OpenSearch: run rag ingest first")
        check_compatible(existing, IndexInfo(self._embedder.model_id, self._embedder.dimension))
        self._checked = True

    # -- shared steps ------------------------------------------------------------------------
    def _identity(self, user: UserContext | None) -> UserContext:
        context = require_user(user)
        if self._resolver is not None:  # the directory's aliases and transitive groups
            context = self._resolver.expand(context)
        return context

    def _query(self, text: str, context: UserContext, k: int | None, options: Options) -> _Query:
        unknown = set(options) - set(Options.__annotations__)
        if unknown:
            raise InvalidRequestError(f"unknown query options: {sorted(unknown)}")
        mode = self._checked_mode(options.get("mode") or self._mode)
        k = self._top_k if k is None else checked_k(k)
        rerank = options.get("rerank")
        if rerank is None:
            rerank = self._reranker is not None
        elif rerank and self._reranker is None:
            raise ConfigurationError("rerank needs a reranker (RAG_RERANK__PROVIDER)")
        expand = options.get("expand")
        if expand is not None and expand not in EXPANSIONS:
            raise InvalidRequestError(f"expand must be one of {EXPANSIONS}, got {expand!r}")
        age = _given(options.get("max_acl_age"), self._max_acl_age)
        return _Query(
            text=text,
            context=context,
            principals=context.principals(case_sensitive=self._case_sensitive),
            k=k,
            depth=max(k, self._candidates) if rerank else k,
            mode=mode,
            min_score=_given(options.get("min_score"), self._min_score),
            filter=options.get("filter"),
            rerank=bool(rerank),
            expand=expand,
            fresh_after=datetime.now(UTC) - age if age is not None else None,
            started=time.perf_counter(),
        )

    def _checked_mode(self, mode: str) -> Mode:
        if mode not in MODES:
            raise ConfigurationError(f"unknown retrieval mode {mode!r}")
        if mode != "dense" and not isinstance(self._store, TextSearchStore):
            raise ConfigurationError(
                f"retrieval mode {mode} needs a store with text search; "
                f"{type(self._store).__name__} has none"
            )
        return mode

    def _text_store(self) -> TextSearchStore:
        if not isinstance(self._store, TextSearchStore):
            raise ConfigurationError(f"{type(self._store).__name__} has no text search")
        return self._store

    def _embed(self, texts: list[str]) -> Vectors:
        """The query vectors of ``texts``, in one model call."""
        if len(texts) == 1:
            return embed_query(self._embedder, texts[0])[None, :]
        vectors = self._embedder.embed_batch(texts, kind="query")
        if vectors.shape != (len(texts), self._embedder.dimension):
            raise EmbeddingError(
                f"{self._embedder.model_id} returned shape {vectors.shape} for {len(texts)} "
                f"queries of {self._embedder.dimension} dimensions"
            )
        return vectors

    def _verify(self, q: _Query, chunks: Sequence[Chunk]) -> None:
        """Every chunk a store returned must be one the user may read (and, with a freshness
        bound, one whose ACL was confirmed since); one that is not refuses the whole answer."""
        for chunk in chunks:
            if not chunk.acl.permits(q.principals):
                log.error(
                    "store returned chunk %s outside the ACL of %s", chunk.id, q.context.user_id
                )
                raise StoreError("the store returned a chunk the user may not read; refusing")
            if q.fresh_after is not None and epoch_ms(chunk.acl_checked_at) < epoch_ms(
                q.fresh_after
            ):
                raise StoreError("the store returned a chunk with a stale ACL; refusing")

    @staticmethod
    def _thresholded(q: _Query, hits: list[SearchHit]) -> list[SearchHit]:
        if q.min_score is None:
            return hits
        return [hit for hit in hits if hit.score >= q.min_score]

    def _result(self, q: _Query, hits: list[SearchHit], context: list[Chunk]) -> Retrieval:
        """The retrieval, audited: the record lists every chunk shown, context included."""
        unaudited = Retrieval(hits, None, passages(hits, context, q.expand))
        latency_ms = (time.perf_counter() - q.started) * 1000
        audit_id = self._record(q, unaudited.chunks, latency_ms)
        return Retrieval(hits, audit_id, unaudited.passages)

    def _record(self, q: _Query, shown: list[SearchHit], latency_ms: float) -> str | None:
        """The audit record of what the user was shown: the hits and any context chunks."""
        if self._audit is None:
            return None
        mode = q.mode + ("+rerank" if q.rerank else "")
        record = AuditRecord(
            id=uuid.uuid4().hex,
            at=datetime.now(UTC),
            user_id=canonical_id(q.context.user_id),
            issuer=q.context.issuer,
            subject=q.context.subject,
            principals_count=len(q.principals),
            principals_hash=principals_digest(q.principals),
            query_hash=query_digest(q.text),
            query=q.text if self._audit_text else None,
            mode=mode,
            k=q.k,
            hits=tuple(
                AuditHit(
                    chunk_id=h.chunk.id,
                    document_id=h.chunk.document_id,
                    source=h.chunk.source,
                    acl_version=h.chunk.acl.digest(),
                    score=h.score,
                )
                for h in shown
            ),
            latency_ms=round(latency_ms, 3),
        )
        try:
            self._audit.write(record)
        except AuditError:
            if self._audit_fail_closed:
                raise
            log.exception("audit record %s not written (audit.fail_closed is off)", record.id)
        return record.id

    def feedback(self, audit_id: str, helpful: bool, note: str | None = None) -> None:
        """Record a user's verdict on the retrieval ``audit_id`` names."""
        if self._audit is None:
            raise ConfigurationError("feedback needs the audit trail (RAG_AUDIT__ENABLED)")
        self._audit.write_feedback(
            Feedback(audit_id=audit_id, at=datetime.now(UTC), helpful=helpful, note=note)
        )

    def _check_index(self) -> None:
        """Once, before anything is embedded: refuse a missing index or one built with another
        model. Read-only: a query never creates an index (no ``ensure_index`` here)."""
        if self._checked:
            return
        existing = self._store.index_info()
        if existing is None:
            self._store.count()  # the store's read path raises IndexNotFoundError naming where
            existing = self._store.index_info()  # ingested in the meantime
            if existing is None:
                raise IndexNotFoundError(
                    f"nothing ingested in {type(self._store).__name__}: run rag ingest first"
                )
        check_compatible(existing, IndexInfo(self._embedder.model_id, self._embedder.dimension))
        self._checked = True

    @classmethod
    def from_settings(cls, settings: Settings) -> Retriever:
        """A retriever over the store, embedder and reranker the settings name, with every
        retrieval setting applied (no I/O yet). On OpenSearch the async methods use
        ``AsyncOpenSearch``."""
        from rag.rerank import build_reranker

        retrieval = settings.retrieval
        async_store: AsyncSearchStore | None = None
        if settings.store.backend == "opensearch":
            from rag.stores.acl_keys import AclKeyOptions
            from rag.stores.opensearch_async import AsyncOpenSearchStore

            async_store = AsyncOpenSearchStore(
                settings.store.opensearch, acl_keys=AclKeyOptions.of(settings.store)
            )
        return cls(
            build_store(settings),
            build_embedder(settings.embedding),
            top_k=retrieval.top_k,
            min_score=retrieval.min_score,
            mode=retrieval.mode,
            case_sensitive_principals=retrieval.case_sensitive_principals,
            audit=build_audit_sink(settings),
            audit_query_text=settings.audit.include_query_text,
            audit_fail_closed=settings.audit.fail_closed,
            max_acl_age=(
                timedelta(seconds=retrieval.max_acl_age_seconds)
                if retrieval.max_acl_age_seconds is not None
                else None
            ),
            resolver=(IdentityResolver(settings) if settings.directory.backend != "none" else None),
            reranker=build_reranker(settings.rerank),
            rerank_candidates=settings.rerank.candidates,
            rerank_on_error=settings.rerank.on_error,
            async_store=async_store,
        )
