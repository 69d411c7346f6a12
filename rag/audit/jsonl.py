"""Audit records as JSON lines, one file per UTC day: ``<dir>/audit-YYYY-MM-DD.jsonl`` and
``<dir>/feedback-YYYY-MM-DD.jsonl``. Each record is one ``O_APPEND`` write, so concurrent
processes never interleave lines."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from rag.audit.base import AuditRecord, Feedback
from rag.errors import AuditError

_Model = TypeVar("_Model", bound=BaseModel)


class JsonlAuditSink:
    """Construction does no I/O; the folder is created on the first write."""

    def __init__(self, directory: Path, *, fsync: bool = False) -> None:
        self._dir = Path(directory)
        self._fsync = fsync

    @property
    def directory(self) -> Path:
        return self._dir

    def write(self, record: AuditRecord) -> None:
        self._append("audit", record.at, record.model_dump_json())

    def write_feedback(self, feedback: Feedback) -> None:
        self._append("feedback", feedback.at, feedback.model_dump_json())

    def _append(self, kind: str, at: datetime, line: str) -> None:
        path = self._dir / f"{kind}-{at.astimezone(UTC):%Y-%m-%d}.jsonl"
        data = (line + "\n").encode("utf-8")
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, data)
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise AuditError(f"cannot write the audit record to {path}: {exc}") from exc

    def records(
        self, *, user_id: str | None = None, since: datetime | None = None
    ) -> Iterator[AuditRecord]:
        for record in self._read("audit", since, AuditRecord):
            if user_id is None or record.user_id == user_id:
                yield record

    def feedback(self, *, since: datetime | None = None) -> Iterator[Feedback]:
        yield from self._read("feedback", since, Feedback)

    def _read(self, kind: str, since: datetime | None, model: type[_Model]) -> Iterator[_Model]:
        if not self._dir.is_dir():
            return
        first_day = f"{kind}-{since.astimezone(UTC):%Y-%m-%d}.jsonl" if since else ""
        for path in sorted(self._dir.glob(f"{kind}-*.jsonl")):
            if path.name < first_day:
                continue
            with path.open(encoding="utf-8") as lines:
                for number, line in enumerate(lines, start=1):
                    try:
                        item = model.model_validate_json(line)
                    except ValidationError as exc:
                        raise AuditError(f"{path}:{number}: unreadable audit line") from exc
                    at = getattr(item, "at")  # noqa: B009
                    if since is None or at >= since:
                        yield item
