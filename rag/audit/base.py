"""The audit records and the sink protocol."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from datetime import datetime
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AuditHit(_Frozen):
    chunk_id: str
    document_id: str
    source: str
    acl_version: str = Field(description="Digest of the ACL the chunk was returned under.")
    score: float


class AuditRecord(_Frozen):
    """One retrieval."""

    id: str
    at: datetime
    user_id: str
    issuer: str | None = None
    subject: str | None = None
    principals_count: int
    principals_hash: str
    query_hash: str
    query: str | None = Field(None, description="Only when RAG_AUDIT__INCLUDE_QUERY_TEXT.")
    mode: str
    k: int
    hits: tuple[AuditHit, ...]
    latency_ms: float


class Feedback(_Frozen):
    """A user's verdict on one audited retrieval."""

    audit_id: str
    at: datetime
    helpful: bool
    note: str | None = None


def principals_digest(principals: AbstractSet[str]) -> str:
    """A stable hash of a principal set (the set itself is not recorded)."""
    return hashlib.sha256("\x1f".join(sorted(principals)).encode("utf-8")).hexdigest()[:32]


def query_digest(query: str) -> str:
    return hashlib.sha256(query.encode("utf-8")).hexdigest()[:32]


@runtime_checkable
class AuditSink(Protocol):
    """Where audit records and feedback go. Writes raise AuditError on failure."""

    def write(self, record: AuditRecord) -> None: ...

    def records(
        self, *, user_id: str | None = None, since: datetime | None = None
    ) -> Iterator[AuditRecord]:
        """Records (oldest first), for one user (canonical id) and/or since a time."""
        ...

    def write_feedback(self, feedback: Feedback) -> None: ...

    def feedback(self, *, since: datetime | None = None) -> Iterator[Feedback]: ...
