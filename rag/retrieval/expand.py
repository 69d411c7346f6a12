"""Context expansion: each hit's neighbouring chunks, or the rest of its section, merged per
document into passages in reading order.

Which chunks to add is computed here (chunk ids are deterministic: ``Chunk.make_id(document,
ordinal)``); the store fetches them by id *with the caller's ACL filter* (and freshness bound)
inside its query, exactly as a search, and the retriever checks every one again. A neighbour the
user may not read is simply missing: the passage stops before it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from rag.errors import AccessDeniedError, ConfigurationError, StoreError
from rag.ids import checked_id
from rag.models import Chunk, SearchHit
from rag.retrieval.citations import Reference, cite
from rag.stores.limits import MAX_K

if TYPE_CHECKING:
    from rag.stores.lancedb import LanceDBStore
    from rag.stores.opensearch import OpenSearchStore

Expand = Literal["neighbors", "section"]
EXPANSIONS: tuple[Expand, ...] = ("neighbors", "section")
SEPARATOR = "\n\n"
_MIN_OVERLAP = 16  # shorter shared text between two chunks is not taken for the chunker's overlap
_MAX_OVERLAP = 8_000


@dataclass(frozen=True)
class Passage:
    """Consecutive chunks of one document in reading order: one or more hits and the context
    expansion added around them."""

    document_id: str
    chunks: tuple[Chunk, ...]
    score: float
    """The best score of the hits in the passage."""
    hit_ids: frozenset[str]
    """Which of ``chunks`` the search returned (the rest is context)."""

    @cached_property
    def text(self) -> str:
        """The chunks' text joined, without the overlap consecutive chunks share."""
        return merge_texts([c.text for c in self.chunks])

    @property
    def reference(self) -> Reference:
        """The citation of the passage's first chunk (its best hit's section and page may
        differ: each chunk's own is ``cite(chunk)``)."""
        return cite(self.chunks[0])

    @property
    def ordinals(self) -> tuple[int, int]:
        """The first and last chunk ordinal of the passage."""
        return self.chunks[0].ordinal, self.chunks[-1].ordinal


def context_ids(hits: Sequence[SearchHit], how: Expand, window: int) -> list[str]:
    """The ids of the chunks to fetch around ``hits`` (none of the hits themselves), in order.

    ``neighbors``: ordinal - 1 and + 1. ``section``: up to ``window`` chunks either side (which
    of them share the hit's section is known only once they are fetched).
    """
    reach = 1 if how == "neighbors" else window
    have = {h.chunk.id for h in hits}
    wanted: dict[str, None] = {}
    for hit in hits:
        chunk = hit.chunk
        for ordinal in range(max(chunk.ordinal - reach, 0), chunk.ordinal + reach + 1):
            cid = Chunk.make_id(chunk.document_id, ordinal)
            if cid not in have:
                wanted[cid] = None
    return list(wanted)


def passages(
    hits: Sequence[SearchHit], context: Iterable[Chunk], how: Expand | None
) -> list[Passage]:
    """``hits`` with their ``context``, deduplicated and merged per document into runs of
    consecutive chunks; best passage first (ties: the order of their best hits).

    Without ``how`` every hit is its own passage, in rank order. A context chunk joins a hit's
    run only when it is next to it (``neighbors``), or connected to it through chunks of the
    hit's section with no gap (``section``).
    """
    if how is None:
        return [
            Passage(h.chunk.document_id, (h.chunk,), h.score, frozenset({h.chunk.id})) for h in hits
        ]
    by_position = {(c.document_id, c.ordinal): c for c in context}
    for hit in hits:
        by_position[(hit.chunk.document_id, hit.chunk.ordinal)] = hit.chunk
    reach = 1 if how == "neighbors" else len(by_position)
    keep: dict[tuple[str, int], Chunk] = {}
    for hit in hits:
        doc, start, section = hit.chunk.document_id, hit.chunk.ordinal, hit.chunk.citation.section
        keep[(doc, start)] = hit.chunk
        for step in (-1, 1):
            ordinal = start + step
            while abs(ordinal - start) <= reach and (doc, ordinal) in by_position:
                chunk = by_position[(doc, ordinal)]
                if how == "section" and chunk.citation.section != section:
                    break
                keep[(doc, ordinal)] = chunk
                ordinal += step
    return _runs(hits, keep)


def _runs(hits: Sequence[SearchHit], keep: dict[tuple[str, int], Chunk]) -> list[Passage]:
    scores: dict[str, float] = {}
    rank: dict[str, int] = {}
    for position, hit in enumerate(hits):
        scores.setdefault(hit.chunk.id, hit.score)
        rank.setdefault(hit.chunk.id, position)
    out: list[tuple[int, Passage]] = []
    run: list[Chunk] = []
    for key in sorted(keep):
        chunk = keep[key]
        if run and (run[-1].document_id != chunk.document_id or run[-1].ordinal + 1 != key[1]):
            out.append(_passage(run, scores, rank))
            run = []
        run.append(chunk)
    if run:
        out.append(_passage(run, scores, rank))
    out.sort(key=lambda item: (-item[1].score, item[0]))
    return [p for _, p in out]


def _passage(
    run: list[Chunk], scores: dict[str, float], rank: dict[str, int]
) -> tuple[int, Passage]:
    ids = frozenset(c.id for c in run if c.id in scores)
    best = max(scores[i] for i in ids)
    return min(rank[i] for i in ids), Passage(run[0].document_id, tuple(run), best, ids)


def merge_texts(texts: Sequence[str]) -> str:
    """Consecutive chunk texts as one, each overlap (the longest suffix of one that starts the
    next, at least 16 characters: the chunker's ``overlap_tokens``) kept once."""
    if not texts:
        return ""
    merged = texts[0]
    for text in texts[1:]:
        shared = overlap(merged, text)
        merged = merged + text[shared:] if shared else merged + SEPARATOR + text
    return merged


def overlap(before: str, after: str) -> int:
    """The length of the longest prefix of ``after`` that ``before`` ends with (0 when it is
    shorter than 16 characters). Linear time: the prefix function of ``after`` + ``before``."""
    head = after[:_MAX_OVERLAP]
    tail = before[-len(head) :] if head else ""
    joined = head + "\x00" + tail
    border = [0] * len(joined)
    for i in range(1, len(joined)):
        j = border[i - 1]
        while j and joined[i] != joined[j]:
            j = border[j - 1]
        if joined[i] == joined[j]:
            j += 1
        border[i] = j
    shared = min(border[-1], len(head))
    if shared < _MIN_OVERLAP or not before.endswith(after[:shared]):
        return 0
    return shared


@runtime_checkable
class ChunkFetcher(Protocol):
    """A store that fetches chunks by id with the caller's ACL filter inside its query."""

    def fetch_chunks(
        self,
        ids: Sequence[str],
        principals: AbstractSet[str],
        *,
        acl_fresh_after: datetime | None = None,
    ) -> list[Chunk]: ...


def fetch_chunks(
    store: object,
    ids: Sequence[str],
    principals: AbstractSet[str],
    *,
    acl_fresh_after: datetime | None = None,
) -> list[Chunk]:
    """The chunks of ``ids`` that ``principals`` may read, the ACL (and freshness) filter inside
    the store's query: the store's own ``fetch_chunks``, or the read of each built-in store."""
    if not principals:
        raise AccessDeniedError("a fetch without principals is refused")
    if not ids:
        return []
    if len(ids) > MAX_K:
        raise StoreError(f"at most {MAX_K} chunks per fetch, got {len(ids)}")
    if isinstance(store, ChunkFetcher):
        return store.fetch_chunks(ids, principals, acl_fresh_after=acl_fresh_after)
    from rag.stores.lancedb import LanceDBStore
    from rag.stores.opensearch import OpenSearchStore

    if isinstance(store, LanceDBStore):
        return _lancedb_fetch(store, ids, principals, acl_fresh_after)
    if isinstance(store, OpenSearchStore):
        return _opensearch_fetch(store, ids, principals, acl_fresh_after)
    raise ConfigurationError(f"{type(store).__name__} cannot fetch chunks: no context expansion")


def _lancedb_fetch(
    store: LanceDBStore,
    ids: Sequence[str],
    principals: AbstractSet[str],
    fresh_after: datetime | None,
) -> list[Chunk]:
    """A LanceDB scan (no vector) under the search's own ACL clause, ``id IN (...)`` AND-ed."""
    from rag.stores.lancedb import _chunk, _quote

    table, where, columns, marks, k, _ = store._prepare(principals, len(ids), fresh_after, None)
    wanted = ", ".join(_quote(checked_id(i)) for i in ids)
    try:
        rows = table.search().where(f"({where}) AND id IN ({wanted})").select(columns).limit(k)
        found = rows.to_arrow().to_pylist()
    except Exception as exc:
        raise StoreError(f"LanceDB fetch failed: {exc}") from exc
    return [_chunk(row, marks) for row in found]


def _opensearch_fetch(
    store: OpenSearchStore,
    ids: Sequence[str],
    principals: AbstractSet[str],
    fresh_after: datetime | None,
) -> list[Chunk]:
    """One OpenSearch search: ``ids`` AND the ACL filter, in one bool query."""
    from rag.stores.opensearch_async import chunks_of, fetch_query

    fresh, marks = store._freshness(fresh_after)
    body = fetch_query(ids, principals, fresh)
    response = store._call("search", store.client.search, index=store._read_target(), body=body)
    return chunks_of(response, marks)
