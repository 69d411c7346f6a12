"""Ingestion: list → read → parse → chunk → embed (batched) → load, with a run summary.

Re-running over unchanged sources leaves the index identical: chunk ids are deterministic, writes
are upserts, and a document's chunks beyond its current ones are deleted after its upsert. A file
that fails at any stage is quarantined with its reason and the run goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from connectors.base import Connector
from rag.chunking import Chunker
from rag.config import Settings
from rag.embeddings import Embedder, EmbeddingStats, build_embedder, embed_in_batches
from rag.errors import ConnectorError, DocumentError, MissingAclError
from rag.models import Chunk, SourceDocument
from rag.parsing import parse
from rag.quarantine import Quarantine, QuarantineRecord
from rag.stores import IndexInfo, VectorStore, build_store

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""Called with (documents done, documents total)."""


@dataclass
class IngestSummary:
    """What one ingestion run did."""

    source: str
    listing_complete: bool = True
    documents_listed: int = 0
    documents_ingested: int = 0
    chunks: int = 0
    tokens: int = 0
    embedding_calls: int = 0
    quarantined: list[QuarantineRecord] = field(default_factory=list)
    listing_errors: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "listing_complete": self.listing_complete,
            "documents_listed": self.documents_listed,
            "documents_ingested": self.documents_ingested,
            "chunks": self.chunks,
            "tokens": self.tokens,
            "embedding_calls": self.embedding_calls,
            "quarantined": [r.model_dump(mode="json") for r in self.quarantined],
            "listing_errors": self.listing_errors,
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
        }


@dataclass
class _Pending:
    documents: list[tuple[SourceDocument, list[Chunk]]] = field(default_factory=list)

    @property
    def chunks(self) -> list[Chunk]:
        return [c for _, chunks in self.documents for c in chunks]


class Ingestor:
    """Runs ingestion for one connector with the given collaborators."""

    def __init__(
        self,
        settings: Settings,
        store: VectorStore,
        embedder: Embedder,
        progress: Progress | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._embedder = embedder
        self._chunker = Chunker(settings.chunking)
        self._quarantine = Quarantine(settings.quarantine_dir)
        self._progress = progress
        self._stats = EmbeddingStats()

    def run(self, connector: Connector) -> IngestSummary:
        summary = IngestSummary(source=connector.name)
        with summary.timed("list"):
            listing = connector.list_documents()
        summary.listing_complete = listing.complete
        summary.listing_errors = list(listing.errors)
        summary.documents_listed = len(listing.documents)
        with summary.timed("load"):
            self._store.ensure_index(IndexInfo(self._embedder.model_id, self._embedder.dimension))
        flush_at = self._settings.embedding.batch_size * 8
        pending = _Pending()
        for done, document in enumerate(listing.documents, start=1):
            chunks = self._prepare(connector, document, summary)
            if chunks is not None:
                pending.documents.append((document, chunks))
                if len(pending.chunks) >= flush_at:
                    self._flush(pending, summary)
                    pending = _Pending()
            if self._progress is not None:
                self._progress(done, len(listing.documents))
        self._flush(pending, summary)
        with summary.timed("index"):
            optimize = getattr(self._store, "optimize", None)
            if callable(optimize):
                optimize()
        summary.embedding_calls = self._stats.calls
        self._collect_dead_letters(listing.documents, summary)
        log.info("ingest %s: %s", connector.name, summary.to_json())
        return summary

    def _collect_dead_letters(
        self, documents: tuple[SourceDocument, ...], summary: IngestSummary
    ) -> None:
        """Chunks the store rejected for good: their documents are quarantined, loudly."""
        letters = getattr(self._store, "dead_letters", None)
        if not letters:
            return
        by_id = {d.id: d for d in documents}
        for document_id in sorted({letter.document_id for letter in letters}):
            rejected = [x for x in letters if x.document_id == document_id]
            message = f"{len(rejected)} chunks rejected by the store: {rejected[0].error}"
            log.error("store rejected chunks of %s: %s", document_id, message)
            if document_id in by_id:
                record = self._quarantine.put(by_id[document_id], "load", "store_rejected", message)
                summary.quarantined.append(record)
        summary.documents_ingested -= len({x.document_id for x in letters} & set(by_id))
        letters.clear()

    def _prepare(
        self, connector: Connector, document: SourceDocument, summary: IngestSummary
    ) -> list[Chunk] | None:
        stage = "acl"
        try:
            if document.acl is None or document.acl.is_empty:
                raise MissingAclError("no ACL for this document (and it is not marked public)")
            stage = "read"
            with summary.timed("read"):
                data = connector.read(document)
            stage = "parse"
            with summary.timed("parse"):
                elements = parse(data, document.uri, self._settings.parsing)
            stage = "chunk"
            with summary.timed("chunk"):
                return self._chunker.chunk(document, elements)
        except (DocumentError, ConnectorError, MissingAclError) as exc:
            reason = getattr(exc, "reason_code", type(exc).__name__)
            if isinstance(exc, MissingAclError):
                reason = "missing_acl"
                self._store.delete_document(document.id)  # never keep it under an old ACL
            log.warning("quarantined %s at %s: %s", document.uri, stage, exc)
            summary.quarantined.append(self._quarantine.put(document, stage, reason, str(exc)))
            return None

    def _flush(self, pending: _Pending, summary: IngestSummary) -> None:
        chunks = pending.chunks
        if chunks:
            with summary.timed("embed"):
                vectors = embed_in_batches(
                    self._embedder,
                    [c.text for c in chunks],
                    self._settings.embedding.batch_size,
                    self._stats,
                )
            with summary.timed("load"):
                self._store.upsert(chunks, vectors)
        with summary.timed("load"):
            for document, doc_chunks in pending.documents:
                self._store.delete_document(document.id, keep={c.id for c in doc_chunks})
                self._quarantine.clear(document)
        summary.documents_ingested += len(pending.documents)
        summary.chunks += len(chunks)
        summary.tokens += sum(c.token_count for c in chunks)


def ingest(
    connector: Connector,
    settings: Settings,
    *,
    store: VectorStore | None = None,
    embedder: Embedder | None = None,
    progress: Progress | None = None,
) -> IngestSummary:
    """Ingest everything ``connector`` lists into the store the settings name."""
    return Ingestor(
        settings,
        store if store is not None else build_store(settings),
        embedder if embedder is not None else build_embedder(settings.embedding),
        progress,
    ).run(connector)
