"""``rag ingest --dry-run``: what a sync would embed and cost, before anything is spent.

Lists the source, plans the sync against the stored state (read only), parses and chunks the
documents that would be processed, and counts the texts the embedding cache does not hold yet.
Nothing is embedded and nothing is written. ``progress(done, total)`` is called as the documents
to process are parsed (first with ``done`` 0, once the plan knows how many there are).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from connectors.base import Connector
from rag.accounting import estimated_calls, price_for
from rag.chunking import Chunker
from rag.classification import check_allowed, label_of
from rag.config import Settings
from rag.embeddings import Embedder, build_embedder
from rag.embeddings.cache import CachedEmbedder
from rag.errors import ClassificationBlockedError, DocumentError
from rag.models import SourceDocument
from rag.parsing import parse, parse_name
from rag.pipeline import Progress
from rag.stores import VectorStore, build_store
from rag.sync.plan import plan_with


@dataclass
class Estimate:
    source: str
    model_id: str
    documents_to_process: int = 0
    acl_only: int = 0
    to_delete: int = 0
    chunks: int = 0
    texts_to_embed: int = 0
    tokens_to_embed: int = 0
    embedding_calls: int = 0
    cost_usd: float | None = None
    unparseable: list[str] = field(default_factory=list)
    by_classification: dict[str, dict[str, int]] = field(default_factory=dict)
    """label -> {"sent to <provider>" or "blocked": documents}."""

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def estimate(
    connector: Connector,
    settings: Settings,
    *,
    store: VectorStore | None = None,
    embedder: Embedder | None = None,
    full_resync: bool = False,
    progress: Progress | None = None,
) -> Estimate:
    """What syncing ``connector`` would embed and cost; ``progress(done, total)`` counts the
    documents to process as they are parsed."""
    model = embedder or build_embedder(settings.embedding)
    target = store or build_store(settings)
    listing = connector.list_documents()
    states = {}
    if target.index_info() is not None:
        states = target.sync_state().load(connector.name)
    plan = plan_with(listing, states, datetime.now(UTC), settings.sync, full_resync)
    result = Estimate(
        connector.name,
        model.model_id,
        len(plan.to_process),
        len(plan.acl_only),
        len(plan.tombstone) + len(plan.purge),
    )
    chunker = Chunker(settings.chunking)
    texts: dict[str, int] = {}
    total = len(plan.to_process)
    if progress is not None:
        progress(0, total)
    for done, document in enumerate(plan.to_process, start=1):
        _count(document, connector, settings, chunker, texts, result)
        if progress is not None:
            progress(done, total)
    pending = list(texts)
    if settings.embedding.cache and settings.embedding_cache_path.exists():
        cache = CachedEmbedder(model, settings.embedding_cache_path)
        pending = [pending[i] for i in cache.missing(pending)]
        cache.close()
    result.texts_to_embed = len(pending)
    result.tokens_to_embed = sum(texts[t] for t in pending)
    result.embedding_calls = estimated_calls(model, len(pending), settings.embedding.batch_size)
    price = price_for(model.model_id, settings.embedding.prices_per_1k_tokens)
    result.cost_usd = None if price is None else result.tokens_to_embed / 1000 * price
    return result


def _count(
    document: SourceDocument,
    connector: Connector,
    settings: Settings,
    chunker: Chunker,
    texts: dict[str, int],
    result: Estimate,
) -> None:
    """Add one document's chunks (and its classification) to ``result``; ``texts`` maps each
    distinct chunk text to its token count."""
    if document.acl is None or document.acl.is_empty:
        return
    label = label_of(document, settings.classification)
    counts = result.by_classification.setdefault(label, {})
    try:
        check_allowed(document, settings.classification, settings.embedding)
    except ClassificationBlockedError:
        counts["blocked"] = counts.get("blocked", 0) + 1
        return
    sent = f"sent to {settings.embedding.provider}"
    counts[sent] = counts.get(sent, 0) + 1
    try:
        name = parse_name(document.uri, document.mime_type)
        elements = parse(connector.read(document), name, settings.parsing)
    except DocumentError as exc:
        result.unparseable.append(f"{document.uri}: {exc}")
        return
    for chunk in chunker.chunk(document, elements):
        texts.setdefault(chunk.text, chunk.token_count)
        result.chunks += 1
