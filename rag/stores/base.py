"""The VectorStore protocol every backend implements, and the checks they share."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from rag.embeddings.base import Vectors
from rag.errors import AccessDeniedError, EmbeddingMismatchError
from rag.identity import validate_principal
from rag.ids import checked_id as checked_id  # re-exported: the stores' callers use it
from rag.models import Acl, Chunk, SearchHit

if TYPE_CHECKING:
    from rag.filters import Filter
    from rag.sync.runs import RunLog
    from rag.sync.state import SyncStateStore


@dataclass(frozen=True)
class IndexInfo:
    """What an index was built with; a store refuses vectors of another model."""

    model_id: str
    dimension: int


@dataclass(frozen=True)
class DeadLetter:
    """A chunk the store rejected for good (a mapping error, say), with its reason."""

    chunk_id: str
    document_id: str
    status: int
    error: str


@runtime_checkable
class VectorStore(Protocol):
    """Chunks with vectors and ACLs. Search always carries the caller's principals."""

    def ensure_index(self, info: IndexInfo) -> None:
        """Create the index for ``info``, or check an existing one was built with it."""
        ...

    def index_info(self) -> IndexInfo | None:
        """What the existing index was built with; None if there is none (no side effects)."""
        ...

    def upsert(self, chunks: Sequence[Chunk], vectors: Vectors) -> None:
        """Insert or replace chunks by id (idempotent)."""
        ...

    def delete_document(self, document_id: str, keep: Collection[str] = ()) -> None:
        """Delete a document's chunks, except the chunk ids in ``keep``."""
        ...

    def update_acl(self, document_id: str, acl: Acl) -> int:
        """Replace the ACL of a document's chunks without re-embedding; returns chunks updated."""
        ...

    def search(
        self,
        vector: Vectors,
        principals: AbstractSet[str],
        k: int,
        *,
        acl_fresh_after: datetime | None = None,
        filter: Filter | None = None,
    ) -> list[SearchHit]:
        """The ``k`` nearest chunks that ``principals`` may read, ACL-filtered inside the search;
        with ``acl_fresh_after``, only chunks whose ACL was confirmed since (fail closed); with
        ``filter``, only chunks it admits (a clause AND-ed with the ACL clause, never replacing
        it: see :mod:`rag.filters`)."""
        ...

    def confirm_acls(self, source: str, at: datetime) -> None:
        """Record that a complete listing of ``source`` that began at ``at`` confirmed every
        ACL of the source (its watermark; chunks keep the time they were last written)."""
        ...

    def acl_watermarks(self) -> dict[str, datetime]:
        """Each source's last complete ACL confirmation (read-only)."""
        ...

    def oldest_acl_check(self, source: str) -> datetime | None:
        """The oldest ACL confirmation among the source's chunks: each chunk counts the later
        of its own write and the source's watermark. None if the source has no chunks, or one
        was never confirmed."""
        ...

    def refresh(self) -> None:
        """Make every write so far visible to search (a no-op where writes already are)."""
        ...

    def optimize(self) -> None:
        """Called at the end of a run: build indexes, make writes visible."""
        ...

    @property
    def dead_letters(self) -> list[DeadLetter]:
        """Chunks the store rejected for good since the list was last cleared."""
        ...

    def sync_state(self) -> SyncStateStore:
        """The durable sync state kept beside this index."""
        ...

    def run_log(self) -> RunLog:
        """The records of sync runs kept beside this index."""
        ...

    def count(self) -> int:
        """Number of chunks in the index."""
        ...


@runtime_checkable
class TextSearchStore(Protocol):
    """A store that also ranks by keywords (BM25) and fuses both rankings (hybrid: reciprocal
    rank fusion, :mod:`rag.stores.fusion`). Both take the same ACL, freshness and metadata
    filtering as :meth:`VectorStore.search`, applied inside each ranking before it is cut."""

    def search_text(
        self,
        text: str,
        principals: AbstractSet[str],
        k: int,
        *,
        acl_fresh_after: datetime | None = None,
        filter: Filter | None = None,
    ) -> list[SearchHit]: ...

    def search_hybrid(
        self,
        text: str,
        vector: Vectors,
        principals: AbstractSet[str],
        k: int,
        *,
        acl_fresh_after: datetime | None = None,
        filter: Filter | None = None,
    ) -> list[SearchHit]: ...


def require_principals(principals: AbstractSet[str]) -> None:
    """Refuse an empty principal set (deny by default). Each principal is validated where the
    search uses it: compiled into the filter, or resolved into ACL keys (once per cached set:
    validating thousands of principals costs more than the search they go into)."""
    if not principals:
        raise AccessDeniedError("search without principals is refused")


def checked_principals(principals: AbstractSet[str]) -> list[str]:
    """Validated, sorted principals; an empty set is refused (deny by default)."""
    if not principals:
        raise AccessDeniedError("search without principals is refused")
    return sorted(validate_principal(p) for p in principals)


def check_compatible(existing: IndexInfo, wanted: IndexInfo) -> None:
    if existing != wanted:
        raise EmbeddingMismatchError(
            f"index was built with {existing.model_id} ({existing.dimension} dims), "
            f"refusing {wanted.model_id} ({wanted.dimension} dims); re-ingest into a new index"
        )
