"""The persisted snapshot of a manifest source (see ``connectors.manifest``): the merged set of
entries, as given, in ``<state_dir>/<name>.jsonl``; how a manifest replaces it (complete) or is
merged into it (delta); the lock that serialises listings; and the per-process offset index by
which ``read()`` finds one document's line.

The file is a header line (``{"snapshot": {"version", "source", "complete_base",
"manifest_sha256"}}``) then one line per id, sorted by id, each starting ``{"doc": "<id>"``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

from connectors.manifest_lines import Parsed, Record, uri_of
from rag.errors import ConnectorError
from rag.models import SourceDocument, stable_hash

SNAPSHOT_VERSION: Final = 1
_SNAPSHOT_DOC: Final = re.compile(rb'^\{"doc": "([0-9a-f]{32})"')


@dataclass
class Snapshot:
    records: dict[str, Record]
    complete_base: bool
    manifest_sha256: str | None = None
    error: str | None = None
    removed: dict[str, str] = field(default_factory=dict)  # id -> uri, deleted by tombstones


class SnapshotStore:
    """The snapshot of the source ``name`` in ``state_dir``. Construction does no I/O."""

    def __init__(self, state_dir: Path, name: str) -> None:
        self._state_dir = state_dir
        self._name = name
        self._index_key: tuple[int, int, int, int] | None = None
        self._index: dict[str, int] = {}

    @property
    def path(self) -> Path:
        return self._state_dir / f"{self._name}.jsonl"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One listing of a source at a time merges into its snapshot."""
        with (self._state_dir / f"{self._name}.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def merge(
        self,
        parsed: Parsed,
        records: dict[str, Record],
        deleted: dict[str, list[int]],
        manifest_name: str,
    ) -> tuple[Snapshot, list[str]]:
        """The set to list now, written as the snapshot; and why the listing is incomplete."""
        errors = list(parsed.errors)
        if parsed.complete and not errors:
            new = Snapshot(dict(records), complete_base=True, manifest_sha256=parsed.sha256)
            old = self.load(header_only=True)
            if old.manifest_sha256 != parsed.sha256 or not old.complete_base:
                self.write(new)
            return new, errors
        old = self.load()
        if old.error is not None:
            errors.append(old.error)
        merged = {**old.records, **records}
        removed: dict[str, str] = {}
        for ident in deleted:
            gone = merged.pop(ident, None)
            removed[ident] = (gone and (gone.uri or uri_of(gone))) or ident
        new = Snapshot(merged, complete_base=old.complete_base, removed=removed)
        self.write(new)
        if not new.complete_base:
            errors.append(
                f"{manifest_name}: no complete manifest of source {self._name} has been listed "
                f"(the snapshot {self.path} holds only deltas): nothing is deleted by "
                f"omission until one is"
            )
        return new, errors

    def load(self, *, header_only: bool = False) -> Snapshot:
        path = self.path
        if not path.exists():
            return Snapshot({}, complete_base=False)
        records: dict[str, Record] = {}
        try:
            with path.open("rb") as handle:
                header = json.loads(handle.readline())["snapshot"]
                if header["version"] != SNAPSHOT_VERSION or header["source"] != self._name:
                    raise ValueError(f"a snapshot of {header['source']!r} v{header['version']}")
                complete_base = bool(header["complete_base"])
                sha = header.get("manifest_sha256")
                if header_only:
                    return Snapshot({}, complete_base, sha)
                for line in handle:
                    record = Record.from_json(json.loads(line))
                    records[record.id] = record
        except (OSError, ValueError, KeyError, TypeError) as exc:
            kept = path.with_suffix(".jsonl.corrupt")
            with contextlib.suppress(OSError):
                os.replace(path, kept)
            return Snapshot(
                {},
                complete_base=False,
                error=f"the snapshot {path} is unreadable ({type(exc).__name__}: {exc}; kept as "
                f"{kept.name}): the entries of earlier manifests are unknown until a complete "
                f"manifest is listed",
            )
        return Snapshot(records, complete_base, sha)

    def write(self, snapshot: Snapshot) -> None:
        header = {
            "snapshot": {
                "version": SNAPSHOT_VERSION,
                "source": self._name,
                "complete_base": snapshot.complete_base,
                "manifest_sha256": snapshot.manifest_sha256,
            }
        }
        fd, tmp = tempfile.mkstemp(dir=self._state_dir, prefix=f".{self._name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(json.dumps(header) + "\n")
                for ident in sorted(snapshot.records):
                    record = snapshot.records[ident]
                    line = record.to_json(stable_hash(self._name, ident))
                    out.write(json.dumps(line, ensure_ascii=False) + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise ConnectorError(f"cannot write the snapshot {self.path}: {exc}") from exc

    def record(self, document: SourceDocument) -> Record:
        """The snapshot line of ``document`` (the set last listed), by a per-process index of
        line offsets that is rebuilt when the snapshot is replaced."""
        try:
            with self.path.open("rb") as handle:
                stat = os.fstat(handle.fileno())
                key = (stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)
                if key != self._index_key:
                    self._index = _offsets(handle)
                    self._index_key = key
                offset = self._index.get(document.id)
                if offset is None:
                    raise ConnectorError(
                        f"{document.uri}: not in the manifest's snapshot (a later listing removed "
                        f"it)"
                    )
                handle.seek(offset)
                record = Record.from_json(json.loads(handle.readline()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConnectorError(f"cannot read the snapshot {self.path}: {exc}") from exc
        if stable_hash(self._name, record.id) != document.id:
            raise ConnectorError(f"{document.uri}: the snapshot's index is stale")
        return record


def _offsets(handle: IO[bytes]) -> dict[str, int]:
    index: dict[str, int] = {}
    handle.seek(0)
    handle.readline()  # the header
    offset = handle.tell()
    for line in iter(handle.readline, b""):
        match = _SNAPSHOT_DOC.match(line)
        if match is not None:
            index[match.group(1).decode("ascii")] = offset
        offset += len(line)
    return index
