"""``rag ingest --dry-run``: what a sync would embed and cost, before anything is spent.

Lists the source, plans the sync against the stored state (read only), parses and chunks the
documents that would be processed, and counts the texts the embedding cache does not hold yet.
Nothing is embedded and nothing is written.
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
from rag.parsing import parse
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
) -> Estimate:
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
    for document in plan.to_process:
        if document.acl is None or document.acl.is_empty:
            continue
        label = label_of(document, settings.classification)
        counts = result.by_classification.setdefault(label, {})
        try:
            check_allowed(document, settings.classification, settings.embedding)
        except ClassificationBlockedError:
            counts["blocked"] = counts.get("blocked", 0) + 1
            continue
        sent = f"sent to {settings.embedding.provider}"
        counts[sent] = counts.get(sent, 0) + 1
        try:
            elements = parse(connector.read(document), document.uri, settings.parsing)
        except DocumentError as exc:
            result.unparseable.append(f"{document.uri}: {exc}")
            continue
        for chunk in chunker.chunk(document, elements):
            texts.setdefault(chunk.text, chunk.token_count)
            result.chunks += 1
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
