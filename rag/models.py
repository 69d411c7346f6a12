"""The domain model: ACLs, source documents, chunks and search hits (immutable, pydantic v2)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rag.identity import PUBLIC, Principal

MetadataValue = str | int | float | bool | None


def stable_hash(*parts: str, length: int = 32) -> str:
    """A deterministic hex id from its parts (SHA-256, unit-separator joined)."""
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:length]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Acl(_Frozen):
    """Who may read a document. Deny wins over allow; an empty allow set admits nobody."""

    allow: frozenset[Principal] = Field(default=frozenset())
    deny: frozenset[Principal] = Field(default=frozenset())

    @classmethod
    def public(cls) -> Acl:
        """An ACL that admits every authenticated user."""
        return cls(allow=frozenset({PUBLIC}))

    @property
    def is_public(self) -> bool:
        return PUBLIC in self.allow and not self.deny

    @property
    def is_empty(self) -> bool:
        return not self.allow

    def meet(self, other: Acl) -> Acl:
        """An ACL admitting only principal sets that both ``self`` and ``other`` admit.

        Every identity holds ``public``, so a side allowing it constrains nothing; otherwise the
        allow sets intersect (conservative: when in doubt, hide). Deny entries add up.
        """
        if PUBLIC in other.allow:
            allow = self.allow
        elif PUBLIC in self.allow:
            allow = other.allow
        else:
            allow = self.allow & other.allow
        return Acl(allow=allow, deny=self.deny | other.deny)

    def permits(self, principals: AbstractSet[str]) -> bool:
        """True if one of ``principals`` is allowed and none is denied."""
        return not self.allow.isdisjoint(principals) and self.deny.isdisjoint(principals)

    def digest(self) -> str:
        """A stable hash of the ACL, to detect permission-only changes."""
        return stable_hash(json.dumps([sorted(self.allow), sorted(self.deny)]))


class SourceDocument(_Frozen):
    """One document as a connector lists it, with who may read it."""

    source: str = Field(description="Name of the source (connector instance).")
    id: str = Field(description="Deterministic document id, stable across runs.")
    uri: str = Field(description="Where the document lives, for citations.")
    title: str
    mime_type: str
    content_hash: str = Field(description="SHA-256 of the raw bytes.")
    size_bytes: int = Field(ge=0)
    modified_at: datetime
    acl: Acl | None = Field(description="None when the source holds no ACL for it.")
    acl_error: str | None = Field(
        default=None,
        description="Why the source could not give an ACL (a broken policy): the document is "
        "hidden and quarantined with this reason until it is fixed. Implies ``acl`` is None.",
    )
    classification: str | None = Field(
        default=None, description="A sensitivity label from the source (see rag.classification)."
    )
    acl_checked_at: datetime | None = Field(
        default=None, description="When the source last confirmed this ACL (its listing)."
    )
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _error_means_no_acl(self) -> SourceDocument:
        if self.acl_error is not None and self.acl is not None:
            raise ValueError("a document with an acl_error has no ACL (it is hidden)")
        return self


class Citation(_Frozen):
    """Where a chunk came from, for the answer's references."""

    document_id: str
    uri: str
    title: str
    section: str | None = None
    page: int | None = None


class Chunk(_Frozen):
    """A piece of a document small enough to embed, carrying its document's ACL."""

    id: str
    document_id: str
    source: str
    ordinal: int = Field(ge=0)
    text: str
    token_count: int = Field(ge=0)
    acl: Acl
    citation: Citation
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)
    acl_checked_at: datetime | None = Field(
        default=None,
        description="When the source last confirmed the ACL; None: unknown (never fresh).",
    )

    @property
    def acl_version(self) -> str:
        """A stable digest of the ACL the chunk carries."""
        return self.acl.digest()

    @staticmethod
    def make_id(document_id: str, ordinal: int) -> str:
        """The deterministic id of the ``ordinal``-th chunk of a document."""
        return stable_hash(document_id, str(ordinal))


class SearchHit(_Frozen):
    """A chunk returned to a user, with its similarity score (higher is better)."""

    chunk: Chunk
    score: float

    def to_json(self) -> dict[str, Any]:
        return {
            "chunk_id": self.chunk.id,
            "document_id": self.chunk.document_id,
            "score": self.score,
            "text": self.chunk.text,
            "citation": self.chunk.citation.model_dump(),
            "acl_version": self.chunk.acl_version,
            "acl_checked_at": (
                self.chunk.acl_checked_at.isoformat() if self.chunk.acl_checked_at else None
            ),
        }


def epoch_ms(at: datetime | None) -> int:
    """Milliseconds since the epoch (0 for None: never), as the stores keep ACL check times."""
    return int(at.timestamp() * 1000) if at is not None else 0


def from_epoch_ms(value: int | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromtimestamp(value / 1000, tz=UTC)
