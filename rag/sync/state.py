"""Durable sync state: what the last runs saw of each document of a source, kept beside the index.

A document's state is written *before* its chunks (``pending``) and again after them (``live``),
so a run killed anywhere leaves a record that the next run finishes or cleans up: no orphans.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rag.models import Acl

Status = Literal["pending", "live", "tombstoned", "quarantined"]


class DocState(BaseModel):
    """One document as the index knows it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str
    document_id: str
    uri: str
    content_hash: str
    acl_digest: str
    status: Status
    chunk_ids: tuple[str, ...] = Field(default=())
    updated_at: datetime
    tombstoned_at: datetime | None = None
    indexed_hash: str | None = Field(
        default=None,
        description="Content hash of the chunks in the index when they are all of one version "
        "and carry ``visible_acl``; None when there are none, or a mix (a write in flight).",
    )
    visible_acl: Acl | None = Field(
        default=None,
        description="The ACL every chunk of the document in the index carries; None when "
        "unknown (a write in flight, or a state from before this field): then any change of "
        "ACL hides the document until its new content is written.",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_older_versions(cls, data: Any) -> Any:
        """States written before ``indexed_hash`` existed: a live or tombstoned document's
        chunks were of its recorded content (its ACL stays unknown, so it fails closed)."""
        if isinstance(data, dict) and "indexed_hash" not in data:
            data = dict(data)
            if data.get("status") in ("live", "tombstoned"):
                data["indexed_hash"] = data.get("content_hash")
        return data


@runtime_checkable
class SyncStateStore(Protocol):
    """Per-source document states, stored beside the index they describe."""

    def load(self, source: str) -> dict[str, DocState]:
        """Every state of ``source`` by document id."""
        ...

    def get(self, source: str, document_ids: Sequence[str]) -> dict[str, DocState]:
        """The states of these documents of ``source`` that exist, by document id."""
        ...

    def put(self, states: Sequence[DocState]) -> None:
        """Insert or replace states (by source and document id)."""
        ...

    def delete(self, source: str, document_ids: Sequence[str]) -> None: ...
