"""Durable sync state: what the last runs saw of each document of a source, kept beside the index.

A document's state is written *before* its chunks (``pending``) and again after them (``live``),
so a run killed anywhere leaves a record that the next run finishes or cleans up: no orphans.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

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


@runtime_checkable
class SyncStateStore(Protocol):
    """Per-source document states, stored beside the index they describe."""

    def load(self, source: str) -> dict[str, DocState]:
        """Every state of ``source`` by document id."""
        ...

    def put(self, states: Sequence[DocState]) -> None:
        """Insert or replace states (by source and document id)."""
        ...

    def delete(self, source: str, document_ids: Sequence[str]) -> None: ...
