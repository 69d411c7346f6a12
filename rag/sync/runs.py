"""A sync run as a stored record beside the index: what was planned, each batch's documents and
outcome, and the run's summary. Orchestrators pass only the run id and a batch index between
steps (a few hundred bytes, whatever the corpus size); any step can be re-run from the record."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from rag.models import SourceDocument
from rag.sync.state import DocState

RunStatus = Literal["running", "succeeded", "partial", "failed"]
BatchStatus = Literal["pending", "done", "failed"]


class BatchRecord(BaseModel):
    """One batch of a run: its documents (as listed, with their ACLs) and its outcome."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    index: int = Field(ge=0)
    documents: list[SourceDocument]
    status: BatchStatus = "pending"
    attempts: int = 0
    error: str | None = None
    summary: dict[str, Any] | None = None


class RunRecord(BaseModel):
    """One sync run of one source."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    source: str
    status: RunStatus = "running"
    started_at: datetime
    listed_at: datetime
    finished_at: datetime | None = None
    full_resync: bool = False
    batch_size: int = Field(ge=1)
    batch_count: int = Field(ge=0)
    plan: dict[str, list[str]] = Field(
        default_factory=dict, description="Document ids by what the plan does to them."
    )
    purge: list[DocState] = Field(default_factory=list)
    planned: dict[str, Any] = Field(
        default_factory=dict, description="The summary of the listing and revocation step."
    )
    summary: dict[str, Any] = Field(
        default_factory=dict, description="The whole run's summary (so far, until finished)."
    )
    error: str | None = None

    @staticmethod
    def new_id(source: str, started: datetime) -> str:
        return f"{source}-{started:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


@runtime_checkable
class RunLog(Protocol):
    """Run and batch records, stored beside the index they describe."""

    def put_run(self, run: RunRecord) -> None: ...

    def get_run(self, run_id: str) -> RunRecord:
        """The record; StoreError if there is none."""
        ...

    def runs(self, source: str | None = None, limit: int = 20) -> list[RunRecord]:
        """The latest runs first."""
        ...

    def put_batches(self, batches: Sequence[BatchRecord]) -> None: ...

    def get_batch(self, run_id: str, index: int) -> BatchRecord: ...

    def batches(self, run_id: str) -> list[BatchRecord]:
        """Every batch of the run, by index."""
        ...


def run_key(run_id: str) -> str:
    return f"run:{run_id}"


def batch_key(run_id: str, index: int) -> str:
    return f"batch:{run_id}:{index:06d}"
