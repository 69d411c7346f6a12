"""Reading a push manifest line by line (see ``connectors.manifest`` for the format): the
entries as given, tombstones, the header, and the fail-closed handling of every broken line.

Every line ends up as a :class:`Record` of the id it names (an entry, or why its document is
hidden), a tombstone, or an error that makes the listing incomplete (a line that names no id).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from rag.errors import ConnectorError
from rag.identity import shown

MANIFEST_VERSION: Final = 1
_SHA256: Final = re.compile(r"^(?:sha256:)?([0-9a-fA-F]{64})$")
_LOOSE_ID: Final = re.compile(r'"id"\s*:\s*("(?:[^"\\\x00-\x1f]|\\.)*")')
_HEADER: Final = "manifest"


class _DuplicateKeyError(ValueError):
    pass


class _Header(BaseModel):
    model_config = ConfigDict(extra="forbid")

    complete: StrictBool = True
    version: int = Field(MANIFEST_VERSION, ge=1, le=MANIFEST_VERSION, strict=True)


class Entry(BaseModel):
    """One document line, as given (ACL entries are checked one by one afterwards)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: StrictStr
    uri: StrictStr | None = Field(None, min_length=1)
    title: StrictStr | None = None
    allow: list[StrictStr] = Field(default_factory=list)
    deny: list[StrictStr] = Field(default_factory=list)
    public: StrictBool = False
    metadata: dict[StrictStr, StrictStr | StrictInt | StrictFloat | StrictBool | None] = Field(
        default_factory=dict
    )
    text: StrictStr | None = None
    path: StrictStr | None = Field(None, min_length=1)
    url: StrictStr | None = Field(None, min_length=1)
    mime_type: StrictStr | None = Field(None, pattern=r"^[\w.+-]+/[\w.+-]+$")
    modified_at: datetime | None = None
    classification: StrictStr | None = None
    content_hash: StrictStr | None = None
    etag: StrictStr | None = Field(None, min_length=1)
    deleted: StrictBool = False

    @field_validator("modified_at", mode="before")
    @classmethod
    def _iso(cls, value: object) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError("modified_at must be an ISO-8601 string")
        at = datetime.fromisoformat(value)
        return at if at.tzinfo is not None else at.replace(tzinfo=UTC)

    @field_validator("content_hash")
    @classmethod
    def _sha256(cls, value: str | None) -> str | None:
        if value is None:
            return None
        match = _SHA256.fullmatch(value)
        if match is None:
            raise ValueError("content_hash must be the SHA-256 of the bytes: sha256:<64 hex>")
        return match.group(1).lower()

    @model_validator(mode="after")
    def _one_content(self) -> Entry:
        given = [k for k in ("text", "path", "url") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"exactly one of text, path or url is needed, got {given or 'none'}")
        if self.text is not None and self.content_hash is not None:
            raise ValueError("content_hash is for path and url entries (a text is hashed)")
        if self.etag is not None and self.url is None:
            raise ValueError("etag is for url entries")
        if self.deleted:
            raise ValueError("a deleted entry is a tombstone")
        return self


@dataclass(frozen=True)
class Record:
    """What one line says about one id: an entry (as given) or why its document is hidden."""

    id: str
    line: int
    origin: str  # the manifest file the line came from
    entry: dict[str, Any] | None = None
    error: str | None = None
    uri: str | None = None
    model: Entry | None = field(default=None, compare=False, repr=False)  # entry, validated

    def where(self) -> str:
        return f"{self.origin}: line {self.line}"

    def to_json(self, doc: str) -> dict[str, Any]:
        data: dict[str, Any] = {"doc": doc, "id": self.id, "line": self.line}
        data["origin"] = self.origin
        if self.entry is not None:
            data["entry"] = self.entry
        else:
            data["error"] = self.error
            data["uri"] = self.uri
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        if not isinstance(data.get("entry"), dict | None):
            raise TypeError("a snapshot entry must be an object")
        return cls(
            id=str(data["id"]),
            line=int(data["line"]),
            origin=str(data["origin"]),
            entry=data.get("entry"),
            error=data.get("error"),
            uri=data.get("uri"),
        )


@dataclass
class Parsed:
    """What one manifest says: its header, the records and tombstones of each id, and the
    lines that name no id (any of them makes the listing incomplete)."""

    complete: bool = True
    header_seen: bool = False
    lines: dict[str, list[Record]] = field(default_factory=dict)
    tombstones: dict[str, list[int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # lines that name no id
    sha256: str = ""
    modified_at: datetime = field(default_factory=lambda: datetime.fromtimestamp(0, UTC))


def read_manifest(path: Path, max_line: int, max_manifest: int) -> Parsed:
    """Every line of the manifest at ``path`` (at most ``max_manifest`` bytes in all, lines of
    at most ``max_line`` bytes), and the SHA-256 of the bytes read."""
    return _Reader(path, max_line, max_manifest).read()


class _Reader:
    def __init__(self, path: Path, max_line: int, max_manifest: int) -> None:
        self._path = path
        self._max_line = max_line
        self._max_manifest = max_manifest

    def read(self) -> Parsed:
        parsed = Parsed()
        digest = hashlib.sha256()
        total = 0
        try:
            with self._path.open("rb") as handle:
                parsed.modified_at = datetime.fromtimestamp(os.fstat(handle.fileno()).st_mtime, UTC)
                number = 0
                first = True
                while True:
                    raw, length, whole = _bounded_line(handle, self._max_line, digest)
                    if not length:
                        break
                    number += 1
                    total += length
                    if total > self._max_manifest:
                        parsed.errors.append(
                            f"{self._path.name}: line {number} and after: past max_manifest_bytes "
                            f"({self._max_manifest}), not read"
                        )
                        break
                    if whole and not raw.strip():
                        continue
                    self._line(raw, whole, number, first, parsed)
                    first = False
        except OSError as exc:
            raise ConnectorError(f"cannot read the manifest {self._path}: {exc}") from exc
        parsed.sha256 = digest.hexdigest()
        return parsed

    def _line(self, raw: bytes, whole: bool, number: int, first: bool, parsed: Parsed) -> None:
        where = f"{self._path.name}: line {number}"
        loose = raw.decode("utf-8", errors="replace")
        if not whole:
            self._broken_line(loose, number, f"longer than {self._max_line} bytes", parsed)
            return
        try:
            data = json.loads(
                raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant
            )
        except UnicodeDecodeError as exc:
            reason = f"not UTF-8 ({exc.reason} at byte {exc.start})"
            self._broken_line(loose, number, reason, parsed)
            return
        except ValueError as exc:  # _DuplicateKeyError too
            self._broken_line(loose, number, f"not valid JSON: {exc}", parsed)
            return
        if b"\\u" in raw and not _encodable(data):
            reason = "holds an unpaired surrogate escape (\\ud800-\\udfff): not Unicode text"
            self._broken_line(loose, number, reason, parsed)
            return
        if not isinstance(data, dict):
            parsed.errors.append(f"{where}: not a JSON object, names no document")
            return
        if _HEADER in data and "id" not in data:
            self._header(data, first, where, parsed)
            return
        ident = data.get("id")
        if not isinstance(ident, str) or not ident.strip():
            parsed.errors.append(f"{where}: no document id (got {shown(ident, 40)})")
            return
        if data.get("deleted") is True:
            parsed.tombstones.setdefault(ident, []).append(number)
            return
        record = Record(ident, number, self._path.name, entry=data)
        try:
            record = replace(record, model=Entry.model_validate(data))
        except ValidationError as exc:
            reason = describe(exc)
            record = Record(ident, number, self._path.name, error=reason, uri=uri_of(record))
        parsed.lines.setdefault(ident, []).append(record)

    def _broken_line(self, text: str, number: int, reason: str, parsed: Parsed) -> None:
        """A line that could not be parsed: its document is hidden when one id can be read from
        it, else the listing is incomplete (the line could have named any document)."""
        found = _LOOSE_ID.findall(text)
        ident = json.loads(found[0]) if len(found) == 1 else None
        if not ident or not ident.strip() or not _encodable(ident):
            parsed.errors.append(f"{self._path.name}: line {number}: {reason}; names no id")
            return
        record = Record(ident, number, self._path.name, error=reason)
        parsed.lines.setdefault(ident, []).append(record)

    def _header(self, data: dict[str, Any], first: bool, where: str, parsed: Parsed) -> None:
        if not first or parsed.header_seen:
            parsed.errors.append(f"{where}: a manifest header must be the first line")
            return
        parsed.header_seen = True
        try:
            if set(data) != {_HEADER}:
                raise ValueError(f"unknown keys {sorted(set(data) - {_HEADER})}")
            parsed.complete = _Header.model_validate(data[_HEADER]).complete
        except (ValidationError, ValueError) as exc:
            parsed.complete = False
            parsed.errors.append(f"{where}: invalid manifest header: {exc}")


def resolve(parsed: Parsed) -> tuple[dict[str, Record], dict[str, list[int]]]:
    """One record per id named by lines that are not tombstones (an id on two lines or more is
    hidden, naming them); and the ids only tombstones name, with their lines."""
    records: dict[str, Record] = {}
    deleted: dict[str, list[int]] = {}
    for ident in parsed.lines.keys() | parsed.tombstones.keys():
        lines = parsed.lines.get(ident, [])
        tombs = parsed.tombstones.get(ident, [])
        if not lines:
            deleted[ident] = sorted(tombs)
        elif len(lines) == 1 and not tombs:
            records[ident] = lines[0]
        else:
            numbers = sorted([r.line for r in lines] + tombs)
            uri = next((r.uri or uri_of(r) for r in lines if r.uri or uri_of(r)), None)
            records[ident] = Record(
                ident,
                numbers[0],
                lines[0].origin,
                error=f"id {shown(ident)} is on lines {', '.join(map(str, numbers))}: "
                f"no line wins, the document is hidden until one line names it",
                uri=uri,
            )
    return records, deleted


def uri_of(record: Record) -> str | None:
    """The uri its entry gives, if any (a hidden record keeps it, to be found by it)."""
    uri = record.entry.get("uri") if record.entry is not None else None
    return uri if isinstance(uri, str) and uri else None


def describe(exc: ValidationError) -> str:
    """The first problem of an entry that is not valid, in one line."""
    error = exc.errors()[0]
    loc = ".".join(str(part) for part in error["loc"]) or "line"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"key {loc}: {error['msg']} (got {shown(error.get('input'), 40)}){more}"


def _bounded_line(handle: IO[bytes], limit: int, digest: Any) -> tuple[bytes, int, bool]:
    """The next line, its length in bytes and True; past ``limit``, its first 64 KiB, its
    length and False. Every byte read goes into ``digest``."""
    line = handle.readline(limit + 1)
    digest.update(line)
    if len(line) <= limit or line.endswith(b"\n"):
        return line, len(line), True
    head, length = line[: 64 * 1024], len(line)
    while line and not line.endswith(b"\n"):
        line = handle.readline(1024 * 1024)
        digest.update(line)
        length += len(line)
    return head, length, False


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are unique (JSON would keep the last of two ``deny`` keys)."""
    data = dict(pairs)
    if len(data) != len(pairs):
        keys = [k for k, _ in pairs]
        twice = next(k for k in keys if keys.count(k) > 1)
        raise _DuplicateKeyError(f"the key {twice!r} is given twice")
    return data


def _encodable(value: Any) -> bool:
    """Whether every string in ``value`` is Unicode text (JSON's \\u escapes can make lone
    surrogates, which no UTF-8 encoder, hash or store accepts)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_encodable(k) and _encodable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_encodable(v) for v in value)
    return True


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")
