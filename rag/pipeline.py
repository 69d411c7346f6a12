"""Ingestion as an incremental sync: list → plan → revoke → parse → chunk → embed → load.

Each run compares the source's listing with the durable sync state kept beside the index:
new or changed content is parsed and chunked, and only text not in the embedding cache is
embedded; an ACL-only change rewrites the ACL of the document's chunks with zero embedding
calls; a document missing from a *complete* listing is tombstoned (hidden at once) and purged on
a later run. Revocations run first, so they reach the index before any content work. A file that
fails at any stage is quarantined with its reason and the run goes on. A run killed at any point
leaves ``pending`` states that the next run completes, so re-running converges to the same index.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from connectors.base import Connector
from rag import telemetry
from rag.accounting import MeteredEmbedder, UsageLedger
from rag.chunking import Chunker
from rag.classification import check_allowed
from rag.config import Settings
from rag.embeddings import Embedder, build_embedder, embed_in_batches
from rag.embeddings.cache import CachedEmbedder, batched_writes
from rag.errors import (
    ConnectorError,
    DocumentError,
    DocumentTooLargeError,
    MissingAclError,
    PolicyError,
    StoreError,
)
from rag.models import Acl, Chunk, SourceDocument
from rag.parsing import parse_document, parse_name
from rag.quarantine import Quarantine, QuarantineRecord
from rag.stores import IndexInfo, VectorStore, build_store
from rag.sync import DocState, Plan, SyncStateStore, acl_digest
from rag.sync.plan import plan_with
from rag.sync.runs import RunLog
from rag.sync.state import Status

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""Called with (documents done, documents to process)."""


@dataclass
class IngestSummary:
    """What one run did."""

    source: str
    run_id: str | None = None
    listing_complete: bool = True
    documents_listed: int = 0
    documents_ingested: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    acl_only: int = 0
    restored: int = 0
    tombstoned: int = 0
    deleted: int = 0
    deletion_blocked: str | None = None
    chunks: int = 0
    tokens: int = 0
    embedding_calls: int = 0
    embedded_texts: int = 0
    embedded_tokens: int = 0
    estimated_cost_usd: float | None = None
    usage: list[dict[str, Any]] = field(default_factory=list)
    revocation_delay_seconds: float | None = None
    oldest_acl_age_seconds: float | None = None
    quarantined: list[QuarantineRecord] = field(default_factory=list)
    listing_errors: list[str] = field(default_factory=list)
    policy_errors: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k not in {"quarantined", "seconds"}}
        data["quarantined"] = [r.model_dump(mode="json") for r in self.quarantined]
        data["seconds"] = {k: round(v, 4) for k, v in self.seconds.items()}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IngestSummary:
        values = dict(data)
        values["quarantined"] = [QuarantineRecord.model_validate(r) for r in data["quarantined"]]
        return cls(**values)

    def merge(self, other: IngestSummary) -> None:
        """Add the work of another part of the same run (a mapped batch)."""
        for name in (
            "documents_ingested",
            "chunks",
            "tokens",
            "embedding_calls",
            "embedded_texts",
            "embedded_tokens",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.quarantined.extend(other.quarantined)
        self.usage.extend(other.usage)
        for stage, seconds in other.seconds.items():
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


@dataclass
class SyncRun:
    """A planned sync: what was listed, what the state said, and what to do."""

    source: str
    listed_at: datetime
    states: dict[str, DocState]
    plan: Plan
    summary: IngestSummary
    acls_confirmed_at: datetime | None = None
    """When a *complete* listing that confirmed every ACL of the source began (None: the
    listing was incomplete, so it confirms nothing as a whole)."""


@dataclass
class _Pending:
    documents: list[tuple[SourceDocument, list[Chunk]]] = field(default_factory=list)

    @property
    def chunks(self) -> list[Chunk]:
        return [c for _, chunks in self.documents for c in chunks]


class Ingestor:
    """Runs one sync of one connector with the given collaborators."""

    def __init__(
        self,
        settings: Settings,
        store: VectorStore,
        embedder: Embedder,
        progress: Progress | None = None,
        checkpoint: Callable[[str], None] | None = None,
    ) -> None:
        self._settings = settings
        self._checkpoint = checkpoint
        self._done_before = 0  # documents of earlier batches (progress across a whole run)
        self._total: int | None = None
        self._store = store
        self._model = embedder
        self._embedder: Embedder = embedder
        self._chunker = Chunker(settings.chunking)
        self._quarantine = Quarantine(settings.quarantine_dir)
        self._progress = progress
        self._ledger = UsageLedger()
        self._source = ""
        self._state: SyncStateStore | None = None

    # -- steps (the DAG runs them as separate tasks; run() runs them in one process) ---------
    def checkpoint(self, name: str) -> None:
        """A named point of the run (``revoked``, ``flushed``, ``batch``): tests kill here."""
        if self._checkpoint is not None:
            self._checkpoint(name)

    @property
    def _sync(self) -> SyncStateStore:
        """The sync state of the open run (``_open`` makes it; a step without it is a bug)."""
        if self._state is None:
            raise StoreError("the sync state is not open: a step ran before the run was opened")
        return self._state

    @property
    def run_log(self) -> RunLog:
        """The stored records of sync runs beside the index."""
        return self._store.run_log()

    def _open(self, source: str) -> None:
        """Meter and cache the model for ``source``; open the index and its sync state."""
        if self._state is not None:
            return
        self._source = source
        self._embedder = self._metered()
        self._store.ensure_index(IndexInfo(self._embedder.model_id, self._embedder.dimension))
        self._state = self._store.sync_state()

    def _metered(self) -> Embedder:
        """The model metered into the current ledger, behind the cache (cache hits cost
        nothing)."""
        metered = MeteredEmbedder(
            self._model,
            self._ledger,
            self._source,
            self._settings.tenant,
            self._settings.chunking.encoding,
        )
        return with_cache(metered, self._settings)

    @contextmanager
    def _stage(
        self, summary: IngestSummary, stage: str, **attributes: telemetry.AttributeValue
    ) -> Iterator[telemetry.StageSpan]:
        """Time ``stage`` into the summary and trace it as a span with the source and tenant."""
        tenant = self._settings.tenant
        with (
            summary.timed(stage),
            telemetry.span(stage, source=summary.source, tenant=tenant, **attributes) as span,
        ):
            yield span

    def _usage(self) -> tuple[int, int, int]:
        """Provider calls, texts and tokens in the ledger (what reached the provider)."""
        totals = self._ledger.totals().values()
        return (
            sum(u.calls for u in totals),
            sum(u.texts for u in totals),
            sum(u.tokens for u in totals),
        )

    def begin(self, connector: Connector, *, full_resync: bool = False) -> SyncRun:
        """List the source and plan the sync against the stored state."""
        summary = IngestSummary(source=connector.name)
        started = datetime.now(UTC)
        with self._stage(summary, "list") as span:
            listing = connector.list_documents()
            span.set(documents=len(listing.documents), complete=listing.complete)
        listed_at = datetime.now(UTC)
        stamped = tuple(d.model_copy(update={"acl_checked_at": started}) for d in listing.documents)
        listing = replace(listing, documents=stamped)
        summary.listing_complete = listing.complete
        summary.listing_errors = list(listing.errors)
        summary.policy_errors = list(listing.policy_errors)
        for problem in listing.policy_errors:
            log.error("policy error (its documents are hidden): %s", problem)
        summary.documents_listed = len(listing.documents)
        with summary.timed("load"):
            self._open(connector.name)
            states = self._sync.load(connector.name)
        plan = plan_with(listing, states, listed_at, self._settings.sync, full_resync)
        if plan.deletion_blocked:
            log.error("deletions skipped: %s", plan.deletion_blocked)
        summary.deletion_blocked = plan.deletion_blocked
        summary.unchanged = len(plan.unchanged)
        confirmed_at = started if listing.complete else None
        return SyncRun(connector.name, listed_at, states, plan, summary, confirmed_at)

    def revoke(self, run: SyncRun) -> None:
        """Permission changes and deletions first: ACL-only updates, restores, tombstones."""
        with self._stage(run.summary, "revoke") as span:
            revoked = self._revoke(run.plan, run.states, run.summary)
            if run.acls_confirmed_at is not None:  # after every ACL change is applied
                self._store.confirm_acls(run.source, run.acls_confirmed_at)
            span.set(
                acl_only=run.summary.acl_only,
                restored=run.summary.restored,
                tombstoned=run.summary.tombstoned,
            )
        if revoked:
            delay = (datetime.now(UTC) - run.listed_at).total_seconds()
            run.summary.revocation_delay_seconds = delay
        run.summary.new, run.summary.changed = len(run.plan.new), len(run.plan.changed)
        self.checkpoint("revoked")

    def process(
        self, connector: Connector, documents: Sequence[SourceDocument], summary: IngestSummary
    ) -> None:
        """Parse, chunk, embed and load these documents (new or changed)."""
        self._open(connector.name)
        self._process(connector, documents, summary)

    def purge(self, source: str, states: Sequence[DocState], summary: IngestSummary) -> None:
        """Phase two of deletion: remove tombstoned documents' chunks and states."""
        self._open(source)
        for state in states:
            self._store.delete_document(state.document_id)
        self._sync.delete(source, [s.document_id for s in states])
        summary.deleted += len(states)

    def finish(self, summary: IngestSummary) -> IngestSummary:
        """Build indexes, make every write visible, and account for embedding usage."""
        with self._stage(summary, "index"):
            self._store.optimize()
        oldest = self._store.oldest_acl_check(summary.source)
        if oldest is not None:
            summary.oldest_acl_age_seconds = (datetime.now(UTC) - oldest).total_seconds()
        self.account(summary)
        log.info("sync %s: %s", summary.source, summary.to_json())
        return summary

    def run(self, connector: Connector, *, full_resync: bool = False) -> IngestSummary:
        """One whole sync, recorded as the orchestrators run it: start (plan, revoke), each
        batch, finish (purge, indexes, summary)."""
        from rag.runs import finish_run, run_batch, start_run

        size = self._settings.sync.batch_size
        tenant = self._settings.tenant
        with telemetry.span("sync", source=connector.name, tenant=tenant) as span:
            record = start_run(self, connector, size, full_resync=full_resync)
            span.set(run_id=record.run_id, batches=record.batch_count)
            self._total = sum(len(i) for k, i in record.plan.items() if k in ("new", "changed"))
            for index in range(record.batch_count):
                self._done_before = index * size
                run_batch(self, connector, record.run_id, index)
                self.checkpoint("batch")
            final = finish_run(self, record.run_id)
        summary = IngestSummary.from_json(final.summary)
        summary.run_id = final.run_id
        return summary

    def account(self, summary: IngestSummary) -> None:
        """Add this process's embedding usage to ``summary``."""
        prices = self._settings.embedding.prices_per_1k_tokens
        calls, texts, tokens = self._usage()
        summary.embedding_calls += calls
        summary.embedded_texts += texts
        summary.embedded_tokens += tokens
        summary.usage = _merge_usage([*summary.usage, *self._ledger.report(prices)])
        self._ledger = UsageLedger()  # accounted once: later batches meter into a new ledger
        if self._state is not None:
            self._embedder = self._metered()
        costs = [u["cost_usd"] for u in summary.usage]
        if costs and all(c is not None for c in costs):
            summary.estimated_cost_usd = float(sum(c for c in costs if isinstance(c, float)))

    # -- revocations: ACL-only changes, restores, narrowing, tombstones ----------------------
    def _revoke(self, plan: Plan, states: dict[str, DocState], summary: IngestSummary) -> bool:
        """Apply every permission change the listing implies before any content work, whatever
        the documents' states: the index never shows old content to anyone the old *and* the
        new ACL do not both admit (see :func:`narrowed_acl`)."""
        # chunks a killed run wrote but never made visible must be found by the ACL updates
        # below (OpenSearch finds a document's chunks by search), or they would keep their ACL
        self._store.refresh()
        now = datetime.now(UTC)
        updated: list[DocState] = []
        for doc in [*plan.acl_only, *plan.restore]:
            old = states[doc.id]
            if doc.acl is None or doc.acl.is_empty:
                plan.changed.append(doc)  # lost its ACL: hidden below, quarantined later
                continue
            count = self._store.update_acl(doc.id, doc.acl)
            if count == 0 and old.chunk_ids:
                plan.changed.append(doc)  # the index lost its chunks: rebuild them
                continue
            updated.append(_state(doc, "live", old.chunk_ids, now))
        summary.acl_only = len(plan.acl_only)
        summary.restored = len(plan.restore)
        narrowed = False
        for doc in plan.changed:  # old content stays until replaced: narrow it now
            before = states.get(doc.id)
            target = narrowed_acl(before, doc) if before is not None else None
            if before is not None and target is not None:
                self._store.update_acl(doc.id, target)
                updated.append(before.model_copy(update={"visible_acl": target, "updated_at": now}))
                narrowed = True
        for state in plan.tombstone:
            self._store.update_acl(state.document_id, Acl())  # hidden from everyone, now
            updated.append(
                state.model_copy(
                    update={
                        "status": "tombstoned",
                        "tombstoned_at": now,
                        "updated_at": now,
                        "visible_acl": Acl(),
                    }
                )
            )
        summary.tombstoned = len(plan.tombstone)
        self._sync.put(updated)
        if updated:
            self._store.refresh()
        return bool(plan.acl_only or plan.tombstone or narrowed)

    # -- content: parse, chunk, embed, load ----------------------------------------------------
    def _process(
        self, connector: Connector, documents: Sequence[SourceDocument], summary: IngestSummary
    ) -> None:
        flush_at = self._settings.embedding.batch_size * 8
        pending = _Pending()
        for done, document in enumerate(documents, start=1):
            chunks = self._prepare(connector, document, summary)
            if chunks is not None:
                pending.documents.append((document, chunks))
                if len(pending.chunks) >= flush_at:
                    self._flush(pending, summary)
                    pending = _Pending()
            if self._progress is not None:
                self._progress(self._done_before + done, self._total or len(documents))
        self._flush(pending, summary)

    def _prepare(
        self, connector: Connector, document: SourceDocument, summary: IngestSummary
    ) -> list[Chunk] | None:
        stage = "acl"
        try:
            if document.acl_error is not None:
                raise PolicyError(document.acl_error)
            if document.acl is None or document.acl.is_empty:
                raise MissingAclError("no ACL for this document (and it is not marked public)")
            stage = "classification"
            check_allowed(document, self._settings.classification, self._settings.embedding)
            stage = "read"
            limit = self._settings.parsing.max_file_bytes
            if document.size_bytes > limit:
                raise DocumentTooLargeError(
                    f"{document.size_bytes} bytes exceeds limit {limit} (not downloaded)"
                )
            with self._stage(summary, "read", document_id=document.id) as span:
                data = connector.read(document)
                span.set(bytes=len(data))
            stage = "parse"
            with self._stage(summary, "parse", document_id=document.id) as span:
                name = parse_name(document.uri, document.mime_type)
                parsed = parse_document(data, name, self._settings.parsing)
                span.set(elements=len(parsed.elements))
            if parsed.title:  # an HTML <title> or Office title becomes the citation title
                document = document.model_copy(update={"title": parsed.title})
            stage = "chunk"
            with self._stage(summary, "chunk", document_id=document.id) as span:
                chunks = self._chunker.chunk(document, parsed.elements)
                span.set(chunks=len(chunks), tokens=sum(c.token_count for c in chunks))
            return chunks  # each carries the document's ACL and when the listing confirmed it
        except (DocumentError, ConnectorError, MissingAclError) as exc:
            reason = getattr(exc, "reason_code", type(exc).__name__)
            old = self._sync.get(document.source, [document.id]).get(document.id)
            # the index keeps what it had (already narrowed by the revocation step)
            indexed = old.indexed_hash if old is not None else None
            visible = old.visible_acl if old is not None else Acl()
            if isinstance(exc, MissingAclError):
                reason = "policy_error" if isinstance(exc, PolicyError) else "missing_acl"
                self._store.delete_document(document.id)  # never keep it under an old ACL
                indexed, visible = None, Acl()
            log.warning("quarantined %s at %s: %s", document.uri, stage, exc)
            summary.quarantined.append(self._quarantine.put(document, stage, reason, str(exc)))
            quarantined = _state(document, "quarantined", (), datetime.now(UTC))
            self._sync.put(
                [quarantined.model_copy(update={"indexed_hash": indexed, "visible_acl": visible})]
            )
            return None

    def _flush(self, pending: _Pending, summary: IngestSummary) -> None:
        if not pending.documents:
            return
        now = datetime.now(UTC)
        # intent first: a run killed after this point is finished by the next one; the index
        # then holds a mix of versions, so the state knows no single visible ACL
        self._sync.put([_state(doc, "pending", (), now) for doc, _ in pending.documents])
        chunks = pending.chunks
        tokens = sum(c.token_count for c in chunks)
        with self._stage(summary, "embed", texts=len(chunks), tokens=tokens) as span:
            before = self._usage()
            texts = [c.text for c in chunks]
            with batched_writes(self._embedder):  # one cache transaction for the flush
                vectors = embed_in_batches(
                    self._embedder, texts, self._settings.embedding.batch_size
                )
            after = self._usage()  # what reached the provider (cache hits do not)
            span.set(
                calls=after[0] - before[0],
                provider_texts=after[1] - before[1],
                provider_tokens=after[2] - before[2],
            )
        documents = len(pending.documents)
        loaded = {"documents": documents, "chunks": len(chunks), "tokens": tokens}
        with self._stage(summary, "load", **loaded) as span:
            self._store.upsert(chunks, vectors)
            for document, doc_chunks in pending.documents:
                # an earlier version's extra chunks, asked of the index itself: a lost or
                # wiped sync state must not leave them visible under their old ACL
                self._store.delete_document(document.id, keep={c.id for c in doc_chunks})
                self._quarantine.clear(document)
            self._sync.put(
                [
                    _state(doc, "live", tuple(c.id for c in doc_chunks), now)
                    for doc, doc_chunks in pending.documents
                ]
            )
            quarantined = len(summary.quarantined)
            self._dead_letters(pending, summary)
            span.set(rejected=len(summary.quarantined) - quarantined)
        summary.documents_ingested += documents
        summary.chunks += len(chunks)
        summary.tokens += tokens
        self.checkpoint("flushed")

    def _dead_letters(self, pending: _Pending, summary: IngestSummary) -> None:
        """Chunks the store rejected for good: their documents are quarantined, loudly."""
        letters = self._store.dead_letters
        if not letters:
            return
        documents = {d.id: d for d, _ in pending.documents}
        for document_id in sorted({x.document_id for x in letters} & set(documents)):
            rejected = [x for x in letters if x.document_id == document_id]
            message = f"{len(rejected)} chunks rejected by the store: {rejected[0].error}"
            log.error("store rejected chunks of %s: %s", document_id, message)
            document = documents[document_id]
            summary.quarantined.append(
                self._quarantine.put(document, "load", "store_rejected", message)
            )
            self._sync.put([_state(document, "pending", (), datetime.now(UTC))])  # retry next run
            summary.documents_ingested -= 1
        letters.clear()


def _state(
    doc: SourceDocument, status: Status, chunk_ids: tuple[str, ...], now: datetime
) -> DocState:
    """The state of ``doc``; a live one's chunks are its content under its ACL, any other's
    index content is unknown here (the caller sets it)."""
    live = status == "live"
    return DocState(
        source=doc.source,
        document_id=doc.id,
        uri=doc.uri,
        content_hash=doc.content_hash,
        acl_digest=acl_digest(doc),
        status=status,
        chunk_ids=chunk_ids,
        updated_at=now,
        indexed_hash=doc.content_hash if live else None,
        visible_acl=doc.acl if live else None,
    )


def narrowed_acl(old: DocState, doc: SourceDocument) -> Acl | None:
    """The ACL the indexed chunks of ``doc`` must carry until its listed version replaces them,
    or None when they may stay as they are.

    - the ACL did not change: the chunks are already within it;
    - the document has no usable ACL now (a broken or removed policy): nobody;
    - the index holds exactly the listed content: its new ACL;
    - the index holds older content under a known ACL: what both that and the new ACL admit;
    - the index holds an unknown mix (a write was in flight): nobody, until rewritten.
    """
    usable = doc.acl is not None and not doc.acl.is_empty and doc.acl_error is None
    if usable and old.acl_digest == acl_digest(doc):
        return None
    if not usable or old.visible_acl is None:
        target = Acl()
    elif old.indexed_hash == doc.content_hash:
        assert doc.acl is not None
        target = doc.acl
    else:
        assert doc.acl is not None
        target = old.visible_acl.meet(doc.acl)
    return None if target == old.visible_acl else target


def _merge_usage(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    merged: dict[tuple[Any, Any, Any], dict[str, Any]] = {}
    for row in rows:
        key = (row["source"], row["tenant"], row["model_id"])
        if key not in merged:
            merged[key] = dict(row)
            continue
        into = merged[key]
        for name in ("calls", "texts", "tokens", "seconds"):
            into[name] += row[name]
        if into["cost_usd"] is not None and row["cost_usd"] is not None:
            into["cost_usd"] += row["cost_usd"]
    return [merged[k] for k in sorted(merged)]


def with_cache(embedder: Embedder, settings: Settings) -> Embedder:
    """Put the (model id, text hash) embedding cache in front of ``embedder`` if configured."""
    if not settings.embedding.cache or isinstance(embedder, CachedEmbedder):
        return embedder
    return CachedEmbedder(embedder, settings.embedding_cache_path)


def ingest(
    connector: Connector,
    settings: Settings,
    *,
    store: VectorStore | None = None,
    embedder: Embedder | None = None,
    progress: Progress | None = None,
    full_resync: bool = False,
    checkpoint: Callable[[str], None] | None = None,
) -> IngestSummary:
    """Sync everything ``connector`` lists into the store the settings name.

    ``embedder`` is the model itself: the run puts metering and the embedding cache in front.
    """
    model = embedder or build_embedder(settings.embedding)
    target = store if store is not None else build_store(settings)
    ingestor = Ingestor(settings, target, model, progress, checkpoint)
    return ingestor.run(connector, full_resync=full_resync)
