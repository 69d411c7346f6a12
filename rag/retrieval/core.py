"""The core retriever: a query and a user in, ranked chunks the user may read out."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from rag.audit import AuditHit, AuditRecord, AuditSink, Feedback, build_audit_sink
from rag.audit.base import principals_digest, query_digest
from rag.config import Settings
from rag.embeddings import build_embedder
from rag.embeddings.base import Embedder, embed_query
from rag.errors import AuditError, ConfigurationError, IndexNotFoundError, StoreError
from rag.identity import UserContext, canonical_id, require_user
from rag.models import SearchHit, epoch_ms
from rag.resolve import IdentityResolver
from rag.stores import build_store
from rag.stores.base import IndexInfo, TextSearchStore, VectorStore, check_compatible
from rag.stores.limits import checked_k

log = logging.getLogger(__name__)

Mode = Literal["dense", "bm25", "hybrid"]


@dataclass(frozen=True)
class Retrieval:
    """What one retrieval returned, and the id of its audit record (None when auditing is off)."""

    hits: list[SearchHit]
    audit_id: str | None


class Retriever:
    """Permission-aware retrieval over a store. Deny by default: no user, no results.

    The store applies the ACL filter inside its search. Every hit is checked once more against
    the user's principals; a hit that fails is a store bug, and the whole answer is refused.

    Retrieval only reads: it never creates an index. A store with nothing ingested raises
    :class:`~rag.errors.IndexNotFoundError`; an index built with another embedding model,
    :class:`~rag.errors.EmbeddingMismatchError`.
    """

    def __init__(
        self,
        store: VectorStore,
        embedder: Embedder,
        top_k: int = 5,
        min_score: float = -1.0,
        mode: Mode = "dense",
        *,
        case_sensitive_principals: bool = False,
        audit: AuditSink | None = None,
        audit_query_text: bool = False,
        audit_fail_closed: bool = True,
        max_acl_age: timedelta | None = None,
        resolver: IdentityResolver | None = None,
    ) -> None:
        if mode not in ("dense", "bm25", "hybrid"):
            raise ConfigurationError(f"unknown retrieval mode {mode!r}")
        if mode != "dense" and not isinstance(store, TextSearchStore):
            raise ConfigurationError(
                f"retrieval mode {mode} needs a store with text search (OpenSearch); "
                f"{type(store).__name__} has none"
            )
        self._store = store
        self._embedder = embedder
        self._top_k = checked_k(top_k)
        self._min_score = min_score
        self._mode = mode
        self._case_sensitive = case_sensitive_principals
        self._audit = audit
        self._audit_text = audit_query_text
        self._audit_fail_closed = audit_fail_closed
        self._max_acl_age = max_acl_age
        self._resolver = resolver
        self._checked = False

    def retrieve(
        self,
        query: str,
        user: UserContext | None,
        k: int | None = None,
        *,
        max_acl_age: timedelta | None = None,
    ) -> list[SearchHit]:
        """The ``k`` chunks most similar to ``query`` among those ``user`` may read (and, with
        ``max_acl_age``, whose ACL the source confirmed that recently)."""
        return self.search(query, user, k, max_acl_age=max_acl_age).hits

    def search(
        self,
        query: str,
        user: UserContext | None,
        k: int | None = None,
        *,
        max_acl_age: timedelta | None = None,
    ) -> Retrieval:
        """:meth:`retrieve`, with the id of its audit record (for :meth:`feedback`)."""
        started = time.perf_counter()
        context = require_user(user)
        if self._resolver is not None:  # the directory's aliases and transitive groups
            context = self._resolver.expand(context)
        principals = context.principals(case_sensitive=self._case_sensitive)
        k = self._top_k if k is None else checked_k(k)
        age = max_acl_age if max_acl_age is not None else self._max_acl_age
        fresh_after = datetime.now(UTC) - age if age is not None else None
        self._check_index()
        hits = self._search(query, principals, k, fresh_after)
        for hit in hits:
            if not hit.chunk.acl.permits(principals):
                log.error(
                    "store returned chunk %s outside the ACL of %s", hit.chunk.id, context.user_id
                )
                raise StoreError("the store returned a chunk the user may not read; refusing")
            checked = hit.chunk.acl_checked_at
            if fresh_after is not None and epoch_ms(checked) < epoch_ms(fresh_after):
                raise StoreError("the store returned a chunk with a stale ACL; refusing")
        if self._mode == "dense":  # BM25 and fused scores are not cosine similarities
            hits = [hit for hit in hits if hit.score >= self._min_score]
        latency_ms = (time.perf_counter() - started) * 1000
        return Retrieval(hits, self._record(query, context, principals, k, hits, latency_ms))

    def _record(
        self,
        query: str,
        context: UserContext,
        principals: frozenset[str],
        k: int,
        hits: list[SearchHit],
        latency_ms: float,
    ) -> str | None:
        if self._audit is None:
            return None
        record = AuditRecord(
            id=uuid.uuid4().hex,
            at=datetime.now(UTC),
            user_id=canonical_id(context.user_id),
            issuer=context.issuer,
            subject=context.subject,
            principals_count=len(principals),
            principals_hash=principals_digest(principals),
            query_hash=query_digest(query),
            query=query if self._audit_text else None,
            mode=self._mode,
            k=k,
            hits=tuple(
                AuditHit(
                    chunk_id=h.chunk.id,
                    document_id=h.chunk.document_id,
                    source=h.chunk.source,
                    acl_version=h.chunk.acl.digest(),
                    score=h.score,
                )
                for h in hits
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

    def _search(
        self, query: str, principals: frozenset[str], k: int, fresh_after: datetime | None
    ) -> list[SearchHit]:
        if self._mode == "dense":
            vector = embed_query(self._embedder, query)
            return self._store.search(vector, principals, k, acl_fresh_after=fresh_after)
        if not isinstance(self._store, TextSearchStore):
            raise ConfigurationError(f"{type(self._store).__name__} has no {self._mode} search")
        if self._mode == "bm25":
            return self._store.search_text(query, principals, k, acl_fresh_after=fresh_after)
        vector = embed_query(self._embedder, query)
        return self._store.search_hybrid(query, vector, principals, k, acl_fresh_after=fresh_after)

    @classmethod
    def from_settings(cls, settings: Settings) -> Retriever:
        """A retriever over the store and embedder the settings name, with every retrieval
        setting applied (no I/O yet)."""
        retrieval = settings.retrieval
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
        )
