"""Quarantine records: documents that could not be ingested, and why. Nothing is lost silently."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from rag.models import SourceDocument


class QuarantineRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    source: str
    document_id: str
    uri: str
    stage: str
    reason: str
    message: str
    at: datetime


class Quarantine:
    """One JSON file per quarantined document under ``root/<source>/``; cleared on success."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def _path(self, source: str, document_id: str) -> Path:
        return self._root / source / f"{document_id}.json"

    def put(
        self, document: SourceDocument, stage: str, reason: str, message: str
    ) -> QuarantineRecord:
        record = QuarantineRecord(
            source=document.source,
            document_id=document.id,
            uri=document.uri,
            stage=stage,
            reason=reason,
            message=message,
            at=datetime.now(UTC),
        )
        path = self._path(document.source, document.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(record.model_dump_json(indent=2), "utf-8")
        return record

    def clear(self, document: SourceDocument) -> None:
        self._path(document.source, document.id).unlink(missing_ok=True)

    def records(self, source: str | None = None) -> list[QuarantineRecord]:
        pattern = f"{source}/*.json" if source else "*/*.json"
        return [
            QuarantineRecord.model_validate(json.loads(p.read_text("utf-8")))
            for p in sorted(self._root.glob(pattern))
        ]
