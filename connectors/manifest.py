"""A push-manifest connector: a custom system writes what it holds, with who may read it, as a
JSON Lines file, and ``rag ingest manifest.jsonl`` (or a source of kind ``manifest``) syncs it.

The file is UTF-8, one JSON object per line (blank lines are skipped)::

    {"manifest": {"complete": true}}
    {"id": "KB-1", "uri": "https://kb.example/1", "title": "Leave policy",
     "allow": ["group:staff"], "deny": ["user:intern"], "public": false,
     "text": "Employees get 25 days...", "mime_type": "text/plain",
     "modified_at": "2025-01-31T12:00:00Z", "classification": "internal",
     "metadata": {"team": "hr"}}
    {"id": "KB-2", "allow": ["group:hr"], "path": "files/payroll.pdf"}
    {"id": "KB-3", "allow": ["public"], "url": "https://kb.example/3.html", "etag": "\\"v7\\""}
    {"id": "KB-0", "deleted": true}

(each object on one line). The keys:

- ``manifest`` (the optional header, first line only): ``complete`` (bool, default true) and
  ``version`` (1). A *complete* manifest is everything the source holds: a document it omits is
  deleted. A *delta* (``"complete": false``) only adds or changes what it names, and deletes what
  its tombstones (``{"id": ..., "deleted": true}``) name. No header: complete.
- ``id`` (required): the document's id in its system, any non-empty string, case-sensitive. The
  document id is ``stable_hash(source, id)``.
- content, exactly one of: ``text`` (the text itself; read as UTF-8), ``path`` (a file, relative
  to the manifest's folder or absolute, that must resolve, symlinks followed, inside the
  manifest's folder or one of the ``path_roots`` option), ``url`` (``file://`` as a path, or
  ``http(s)://`` under one of the ``url_prefixes`` option, none by default, fetched without
  credentials). Changes are found by content hash: the SHA-256 of the text; for a file, the
  ``content_hash`` given (``sha256:<hex>`` of its bytes) or else the file hashed at each listing;
  for an http(s) URL, ``content_hash``, else ``etag`` (any version token), else the URL fetched
  and hashed at each listing. ``read()`` checks that the bytes are the ones listed (their hash, or
  the server's ETag when it sends one): otherwise the document is quarantined and the next run
  lists it again. A file or URL that cannot be read when listed is listed anyway, under a hash
  that names the failure, and quarantined with the reason when read.
- ``uri`` (default: the id), ``title`` (default: the id), ``mime_type`` (default: from the
  extension of the path, URL or uri; text: ``text/plain``), ``modified_at`` (ISO-8601; no zone
  is UTC), ``classification`` (a sensitivity label, see ``rag.classification``), ``metadata``
  (string keys, scalar values; ``manifest_id`` is set to the id, and ``link`` to the uri when it
  is an http(s) URL unless given).
- ``allow``, ``deny``, ``public``: principals in the canonical form of ``rag.identity``, as in
  folder policies (``user:<id>``, ``group:<id>``, ``public``; ids are case-folded unless the
  source sets ``case_sensitive_ids``). An invalid allow entry is dropped and reported (it could
  only have widened access); a document that allows nobody is never indexed.

Everything wrong fails closed:

- a line that names an id but is otherwise wrong (invalid JSON from which one ``"id"`` can still
  be read, a duplicate key, an unknown key, a wrong type, no or two kinds of content, an invalid
  deny entry, a line longer than the bound) lists its document *hidden* (``acl_error``: the file,
  line and reason), so it is quarantined until a later manifest names it correctly;
- an id named by two lines or more (unless all are tombstones) hides that document, naming the
  lines: no line wins;
- a line that names no readable id, a misplaced or invalid header, bytes past
  ``max_manifest_bytes`` or an unreadable snapshot make the listing *incomplete*: nothing is
  deleted by omission; the entries read are merged as if the manifest were a delta, and the ids
  its tombstones name are listed hidden, so that deleting still hides at once.

Delta manifests need the previous set: the connector keeps a snapshot of the merged set (the
entries as given, text included, so that a later delta and ``read()`` in another process see it)
in ``<state_dir>/<name>.jsonl``, by default ``.rag/connectors/`` beside the manifest. A complete
manifest replaces it; a delta is merged into it (merging the same delta twice changes nothing,
and a ``--dry-run`` merges too). Until a complete manifest has been listed, the merged set may
not be all the source holds, so the listing is incomplete (deletions then only hide).

Limits: ``max_entry_bytes`` (default 50 MiB, as ``parsing.max_file_bytes``) per document's
content; a line may hold up to six times that (JSON escapes) plus 1 MiB; ``max_manifest_bytes``
(default 4 GiB) in all.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final
from urllib.parse import unquote, urljoin, urlsplit

import httpx
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

from connectors.base import SOURCE_NAME, Listing
from connectors.policy import PolicyReader, RawRule
from rag.errors import ConfigurationError, ConnectorError, DocumentTooLargeError, PolicyError
from rag.identity import shown
from rag.models import Acl, SourceDocument, stable_hash
from rag.parsing import mime_type_for

log = logging.getLogger(__name__)

MAX_ENTRY_BYTES: Final = 50 * 1024 * 1024
MAX_MANIFEST_BYTES: Final = 4 * 1024**3
MANIFEST_VERSION: Final = 1
SNAPSHOT_VERSION: Final = 1
UNAVAILABLE: Final = "unavailable:"  # the content hash of what could not be read when listed
HIDDEN: Final = "hidden:"  # the content hash of a document hidden by a broken line
ETAG: Final = "etag:"
_SHA256: Final = re.compile(r"^(?:sha256:)?([0-9a-fA-F]{64})$")
_LOOSE_ID: Final = re.compile(r'"id"\s*:\s*("(?:[^"\\\x00-\x1f]|\\.)*")')
_SNAPSHOT_DOC: Final = re.compile(rb'^\{"doc": "([0-9a-f]{32})"')
_MAX_REDIRECTS: Final = 5
_HEADER: Final = "manifest"


class _DuplicateKeyError(ValueError):
    pass


class _Header(BaseModel):
    model_config = ConfigDict(extra="forbid")

    complete: StrictBool = True
    version: int = Field(MANIFEST_VERSION, ge=1, le=MANIFEST_VERSION, strict=True)


class _LineReader(PolicyReader):
    """A policy reader for one manifest line: every problem it names is on that line."""

    def __init__(self, origin: str, line: int, case_sensitive: bool) -> None:
        super().__init__(origin, "", case_sensitive)
        self._line = line

    def line_of(self, needle: Any, key: str | None = None) -> int | str:
        return self._line


class _Entry(BaseModel):
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
    def _one_content(self) -> _Entry:
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
class _Record:
    """What one line says about one id: an entry (as given) or why its document is hidden."""

    id: str
    line: int
    origin: str  # the manifest file the line came from
    entry: dict[str, Any] | None = None
    error: str | None = None
    uri: str | None = None
    model: _Entry | None = field(default=None, compare=False, repr=False)  # entry, validated

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
    def from_json(cls, data: dict[str, Any]) -> _Record:
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
class _Parsed:
    complete: bool = True
    header_seen: bool = False
    lines: dict[str, list[_Record]] = field(default_factory=dict)
    tombstones: dict[str, list[int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # lines that name no id
    sha256: str = ""
    modified_at: datetime = field(default_factory=lambda: datetime.fromtimestamp(0, UTC))


@dataclass
class _Snapshot:
    records: dict[str, _Record]
    complete_base: bool
    manifest_sha256: str | None = None
    error: str | None = None
    removed: dict[str, str] = field(default_factory=dict)  # id -> uri, deleted by tombstones


@dataclass
class _Listed:
    documents: list[SourceDocument] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    policy_errors: list[str] = field(default_factory=list)
    acls: dict[tuple[Any, ...], _AclOf] = field(default_factory=dict)  # by the keys as given


@dataclass(frozen=True)
class _AclOf:
    """The ACL and label of one combination of ACL keys, with its problems (not yet naming a
    line): the dropped allow entries, or the invalid deny entry that hides the document."""

    acl: Acl | None
    label: str | None
    dropped: tuple[str, ...] = ()
    error: str | None = None


class ManifestConnector:
    """Lists the documents a push manifest names (see the module's docstring). Construction
    does no I/O."""

    def __init__(
        self,
        path: Path,
        name: str,
        *,
        state_dir: Path | None = None,
        case_sensitive_ids: bool = False,
        path_roots: Sequence[Path] | None = None,
        url_prefixes: Sequence[str] = (),
        max_entry_bytes: int = MAX_ENTRY_BYTES,
        max_manifest_bytes: int = MAX_MANIFEST_BYTES,
        http_timeout_seconds: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not SOURCE_NAME.fullmatch(name):
            raise ConfigurationError(f"source name {name!r} must match {SOURCE_NAME.pattern}")
        if max_entry_bytes <= 0 or max_manifest_bytes <= 0 or http_timeout_seconds <= 0:
            raise ConfigurationError(f"source {name}: manifest limits must be positive")
        self._path = Path(path)
        self._name = name
        self._state_dir = state_dir or self._path.parent / ".rag" / "connectors"
        self._case_sensitive = case_sensitive_ids
        roots = path_roots if path_roots is not None else [self._path.parent]
        self._roots = tuple(Path(r) for r in roots)
        self._prefixes = tuple(_url_prefix(name, p) for p in url_prefixes)
        self._max_entry = max_entry_bytes
        self._max_line = 6 * max_entry_bytes + 1024 * 1024
        self._max_manifest = max_manifest_bytes
        self._timeout = http_timeout_seconds
        self._transport = transport
        self._index_key: tuple[int, int, int, int] | None = None
        self._index: dict[str, int] = {}

    @property
    def name(self) -> str:
        return self._name

    @property
    def snapshot_path(self) -> Path:
        return self._state_dir / f"{self._name}.jsonl"

    # -- listing --------------------------------------------------------------------------------
    def list_documents(self) -> Listing:
        if not self._path.is_file():
            raise ConnectorError(f"cannot read the manifest {self._path}: no such file")
        try:
            self._state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConnectorError(
                f"cannot create the state folder {self._state_dir}: {exc}"
            ) from exc
        with self._locked():
            parsed = self._read_manifest()
            records, deleted = _resolve(parsed)
            snapshot, errors = self._merge(parsed, records, deleted)
        complete = not errors
        listed = _Listed(errors=errors)
        with _Http(self._timeout, self._transport) as http:
            for record in snapshot.records.values():
                listed.documents.append(self._document(record, parsed.modified_at, http, listed))
        if not complete:  # deletion by omission is off: a tombstone hides what it names
            for ident, lines in sorted(deleted.items()):
                reason = (
                    f"deleted by line {', '.join(map(str, lines))}, and hidden rather than "
                    f"removed because the listing is incomplete"
                )
                uri = snapshot.removed.get(ident, ident)
                record = _Record(ident, lines[-1], self._path.name, error=reason, uri=uri)
                listed.documents.append(self._hidden(record, parsed.modified_at))
        listed.documents.sort(key=lambda d: (d.uri, d.id))
        for problem in listed.errors:
            log.error("manifest %s: %s", self._name, problem)
        return Listing(
            self._name,
            tuple(listed.documents),
            complete=complete,
            errors=tuple(listed.errors),
            policy_errors=tuple(listed.policy_errors),
        )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One listing of a source at a time merges into its snapshot."""
        with (self._state_dir / f"{self._name}.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read_manifest(self) -> _Parsed:
        parsed = _Parsed()
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

    def _line(self, raw: bytes, whole: bool, number: int, first: bool, parsed: _Parsed) -> None:
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
        record = _Record(ident, number, self._path.name, entry=data)
        try:
            record = replace(record, model=_Entry.model_validate(data))
        except ValidationError as exc:
            reason = _describe(exc)
            record = _Record(ident, number, self._path.name, error=reason, uri=_uri_of(record))
        parsed.lines.setdefault(ident, []).append(record)

    def _broken_line(self, text: str, number: int, reason: str, parsed: _Parsed) -> None:
        """A line that could not be parsed: its document is hidden when one id can be read from
        it, else the listing is incomplete (the line could have named any document)."""
        found = _LOOSE_ID.findall(text)
        ident = json.loads(found[0]) if len(found) == 1 else None
        if not ident or not ident.strip() or not _encodable(ident):
            parsed.errors.append(f"{self._path.name}: line {number}: {reason}; names no id")
            return
        record = _Record(ident, number, self._path.name, error=reason)
        parsed.lines.setdefault(ident, []).append(record)

    def _header(self, data: dict[str, Any], first: bool, where: str, parsed: _Parsed) -> None:
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

    def _merge(
        self, parsed: _Parsed, records: dict[str, _Record], deleted: dict[str, list[int]]
    ) -> tuple[_Snapshot, list[str]]:
        """The set to list now, written as the snapshot; and why the listing is incomplete."""
        errors = list(parsed.errors)
        if parsed.complete and not errors:
            new = _Snapshot(dict(records), complete_base=True, manifest_sha256=parsed.sha256)
            old = self._load_snapshot(header_only=True)
            if old.manifest_sha256 != parsed.sha256 or not old.complete_base:
                self._write_snapshot(new)
            return new, errors
        old = self._load_snapshot()
        if old.error is not None:
            errors.append(old.error)
        merged = {**old.records, **records}
        removed: dict[str, str] = {}
        for ident in deleted:
            gone = merged.pop(ident, None)
            removed[ident] = (gone and (gone.uri or _uri_of(gone))) or ident
        new = _Snapshot(merged, complete_base=old.complete_base, removed=removed)
        self._write_snapshot(new)
        if not new.complete_base:
            errors.append(
                f"{self._path.name}: no complete manifest of source {self._name} has been listed "
                f"(the snapshot {self.snapshot_path} holds only deltas): nothing is deleted by "
                f"omission until one is"
            )
        return new, errors

    # -- snapshot -------------------------------------------------------------------------------
    def _load_snapshot(self, *, header_only: bool = False) -> _Snapshot:
        path = self.snapshot_path
        if not path.exists():
            return _Snapshot({}, complete_base=False)
        records: dict[str, _Record] = {}
        try:
            with path.open("rb") as handle:
                header = json.loads(handle.readline())["snapshot"]
                if header["version"] != SNAPSHOT_VERSION or header["source"] != self._name:
                    raise ValueError(f"a snapshot of {header['source']!r} v{header['version']}")
                complete_base = bool(header["complete_base"])
                sha = header.get("manifest_sha256")
                if header_only:
                    return _Snapshot({}, complete_base, sha)
                for line in handle:
                    record = _Record.from_json(json.loads(line))
                    records[record.id] = record
        except (OSError, ValueError, KeyError, TypeError) as exc:
            kept = path.with_suffix(".jsonl.corrupt")
            with contextlib.suppress(OSError):
                os.replace(path, kept)
            return _Snapshot(
                {},
                complete_base=False,
                error=f"the snapshot {path} is unreadable ({type(exc).__name__}: {exc}; kept as "
                f"{kept.name}): the entries of earlier manifests are unknown until a complete "
                f"manifest is listed",
            )
        return _Snapshot(records, complete_base, sha)

    def _write_snapshot(self, snapshot: _Snapshot) -> None:
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
            os.replace(tmp, self.snapshot_path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise ConnectorError(f"cannot write the snapshot {self.snapshot_path}: {exc}") from exc

    # -- documents ------------------------------------------------------------------------------
    def _document(
        self, record: _Record, default_at: datetime, http: _Http, listed: _Listed
    ) -> SourceDocument:
        if record.entry is None:
            listed.policy_errors.append(f"{record.where()}: {record.error}")
            return self._hidden(record, default_at)
        try:
            entry = record.model or _Entry.model_validate(record.entry)
        except ValidationError as exc:
            return self._hidden_because(record, _describe(exc), default_at, listed)
        rules = self._acl(entry, listed.acls)
        if rules.error is not None or rules.acl is None:
            return self._hidden_because(record, str(rules.error), default_at, listed)
        listed.policy_errors.extend(f"{record.where()}: {p}" for p in rules.dropped)
        acl, label = rules.acl, rules.label
        content_hash, size, file_at = self._listed_hash(entry, http)
        uri = entry.uri or entry.id
        metadata: dict[str, str | int | float | bool | None] = {}
        if urlsplit(uri).scheme in ("http", "https"):
            metadata["link"] = uri
        metadata.update(entry.metadata)
        metadata["manifest_id"] = entry.id
        return SourceDocument(
            source=self._name,
            id=stable_hash(self._name, entry.id),
            uri=uri,
            title=entry.title or entry.id,
            mime_type=self._mime_type(entry, uri),
            content_hash=content_hash,
            size_bytes=size,
            modified_at=entry.modified_at or file_at or default_at,
            acl=acl,
            classification=label,
            metadata=metadata,
        )

    def _hidden_because(
        self, record: _Record, reason: str, default_at: datetime, listed: _Listed
    ) -> SourceDocument:
        hidden = _Record(record.id, record.line, record.origin, error=reason, uri=_uri_of(record))
        listed.policy_errors.append(f"{record.where()}: {reason}")
        return self._hidden(hidden, default_at)

    def _hidden(self, record: _Record, default_at: datetime) -> SourceDocument:
        message = f"{record.where()}: {record.error}"
        return SourceDocument(
            source=self._name,
            id=stable_hash(self._name, record.id),
            uri=record.uri or record.id,
            title=record.id,
            mime_type="text/plain",
            content_hash=HIDDEN + stable_hash(message, length=16),
            size_bytes=0,
            modified_at=default_at,
            acl=None,
            acl_error=f"manifest error: {message}",
            metadata={"manifest_id": record.id},
        )

    def _acl(self, entry: _Entry, known: dict[tuple[Any, ...], _AclOf]) -> _AclOf:
        """The entry's ACL and label, built as a folder policy's rule is (with no parent): an
        invalid allow entry is dropped, an invalid deny entry hides the document. Worked out
        once per combination of keys in a listing (a manifest repeats its groups)."""
        key = (tuple(entry.allow), tuple(entry.deny), entry.public, entry.classification)
        if key in known:
            return known[key]
        reader = _LineReader("", 0, self._case_sensitive)
        where = f"{reader.rel}: line 0: "
        raw = RawRule(
            allow=entry.allow,
            deny=entry.deny,
            public=entry.public,
            classification=entry.classification,
        )
        try:
            rule = reader.rule(raw, "")
        except PolicyError as exc:
            result = _AclOf(None, None, error=str(exc).removeprefix(where))
        else:
            # the principals are canonical already (canonical_principal, deny_forms)
            acl = Acl.model_construct(allow=rule.allow, deny=rule.deny)
            dropped = tuple(w.removeprefix(where) for w in reader.warnings)
            result = _AclOf(acl, rule.label, dropped)
        known[key] = result
        return result

    def _mime_type(self, entry: _Entry, uri: str) -> str:
        if entry.mime_type:
            return entry.mime_type.lower()
        named = entry.path or (urlsplit(entry.url).path if entry.url else None)
        found = (mime_type_for(named) if named else None) or mime_type_for(urlsplit(uri).path)
        return found or ("text/plain" if entry.text is not None else "application/octet-stream")

    def _listed_hash(self, entry: _Entry, http: _Http) -> tuple[str, int, datetime | None]:
        """The content hash, size and file time of an entry at listing; what cannot be read
        gets a hash naming the failure (``read()`` then quarantines it with the reason)."""
        if entry.text is not None:
            data = entry.text.encode("utf-8")
            return hashlib.sha256(data).hexdigest(), len(data), None
        try:
            local = self._local_path(entry)
            if local is not None:
                return self._file_hash(local, entry.content_hash)
            assert entry.url is not None
            self._check_url(entry.url)
            if entry.content_hash is not None:
                return entry.content_hash, 0, None
            if entry.etag is not None:
                return _etag_hash(entry.etag), 0, None
            data, _ = self._fetch(http.client(), entry.url)
            return hashlib.sha256(data).hexdigest(), len(data), None
        except (ConnectorError, DocumentTooLargeError) as exc:
            log.warning("manifest %s: %s: not readable now: %s", self._name, entry.id, exc)
            return UNAVAILABLE + stable_hash(str(exc), length=16), 0, None

    def _file_hash(self, path: Path, declared: str | None) -> tuple[str, int, datetime | None]:
        try:
            stat = path.stat()
            at = datetime.fromtimestamp(stat.st_mtime, UTC)
            if declared is not None:
                return declared, stat.st_size, at
            if stat.st_size > self._max_entry:
                raise DocumentTooLargeError(f"{path}: {stat.st_size} bytes > {self._max_entry}")
            with path.open("rb") as handle:
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
            return digest, stat.st_size, at
        except OSError as exc:
            if declared is not None:
                return declared, 0, None  # read() says what is wrong
            raise ConnectorError(f"cannot read {path}: {exc}") from exc

    def _local_path(self, entry: _Entry) -> Path | None:
        """The file of a path or file:// entry, checked to be under a root; None for http(s)."""
        if entry.path is not None:
            path = Path(entry.path)
        else:
            assert entry.url is not None
            parts = urlsplit(entry.url)
            if parts.scheme in ("http", "https"):
                return None
            if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
                raise ConnectorError(f"url {shown(entry.url)}: only file:// and http(s):// URLs")
            path = Path(unquote(parts.path))
        path = path if path.is_absolute() else self._path.parent / path
        resolved = path.resolve()
        if not any(resolved.is_relative_to(root.resolve()) for root in self._roots):
            roots = ", ".join(str(r) for r in self._roots)
            raise ConnectorError(
                f"{path} is outside the folders this source may read ({roots}; set the "
                f"source's path_roots option to allow others)"
            )
        return resolved

    # -- reading --------------------------------------------------------------------------------
    def read(self, document: SourceDocument) -> bytes:
        record = self._snapshot_record(document)
        if record.entry is None:
            raise ConnectorError(f"{document.uri}: hidden: {record.error}")
        try:
            entry = _Entry.model_validate(record.entry)
        except ValidationError as exc:
            raise ConnectorError(f"{document.uri}: {_describe(exc)}") from None
        etag: str | None = None
        if entry.text is not None:
            data = entry.text.encode("utf-8")
            if len(data) > self._max_entry:
                raise DocumentTooLargeError(f"{len(data)} bytes exceeds limit {self._max_entry}")
        elif (local := self._local_path(entry)) is not None:
            data = self._read_file(local)
        else:
            assert entry.url is not None
            self._check_url(entry.url)
            with _Http(self._timeout, self._transport) as http:
                data, etag = self._fetch(http.client(), entry.url)
        self._verify(document, entry, data, etag)
        return data

    def _read_file(self, path: Path) -> bytes:
        try:
            with path.open("rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size > self._max_entry:
                    raise DocumentTooLargeError(f"{size} bytes exceeds limit {self._max_entry}")
                return handle.read(self._max_entry + 1)
        except OSError as exc:
            raise ConnectorError(f"cannot read {path}: {exc}") from exc

    def _verify(
        self, document: SourceDocument, entry: _Entry, data: bytes, etag: str | None
    ) -> None:
        listed = document.content_hash
        if listed.startswith(ETAG):
            if entry.etag is None or listed != _etag_hash(entry.etag):
                raise ConnectorError(f"{document.uri}: its manifest entry changed since listing")
            if etag is not None and _bare_etag(etag) != _bare_etag(entry.etag):
                raise ConnectorError(
                    f"{document.uri}: the server's ETag {shown(etag)} is not the manifest's "
                    f"{shown(entry.etag)}: the content changed since the manifest was written"
                )
            return
        if listed.startswith((UNAVAILABLE, HIDDEN)):
            raise ConnectorError(
                f"{document.uri}: could not be read when the manifest was listed; the next run "
                f"lists it again"
            )
        if hashlib.sha256(data).hexdigest() == listed:
            return
        if entry.content_hash is not None:
            raise ConnectorError(
                f"{document.uri}: the bytes do not have the manifest's content_hash {listed}"
            )
        raise ConnectorError(
            f"{document.uri}: changed since it was listed (for a page that changes at each "
            f"fetch, give an etag or content_hash); the next run lists it again"
        )

    def _snapshot_record(self, document: SourceDocument) -> _Record:
        """The snapshot line of ``document`` (the set last listed), by a per-process index of
        line offsets that is rebuilt when the snapshot is replaced."""
        try:
            with self.snapshot_path.open("rb") as handle:
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
                record = _Record.from_json(json.loads(handle.readline()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConnectorError(f"cannot read the snapshot {self.snapshot_path}: {exc}") from exc
        if stable_hash(self._name, record.id) != document.id:
            raise ConnectorError(f"{document.uri}: the snapshot's index is stale")
        return record

    # -- http -----------------------------------------------------------------------------------
    def _check_url(self, url: str) -> None:
        parts = urlsplit(url)
        for scheme, netloc, path in self._prefixes:
            if (parts.scheme, parts.netloc.lower()) == (scheme, netloc) and (
                parts.path or "/"
            ).startswith(path):
                return
        allowed = ", ".join(f"{s}://{n}{p}" for s, n, p in self._prefixes) or "none"
        raise ConnectorError(f"url {shown(url)} is not under the source's url_prefixes ({allowed})")

    def _fetch(self, client: httpx.Client, url: str) -> tuple[bytes, str | None]:
        """GET ``url`` (redirects followed only within the allowed prefixes), at most
        ``max_entry_bytes``; the bytes and the response's ETag."""
        try:
            for _ in range(_MAX_REDIRECTS + 1):
                with client.stream("GET", url) as response:
                    if response.is_redirect:
                        url = urljoin(url, response.headers.get("location", ""))
                        self._check_url(url)
                        continue
                    response.raise_for_status()
                    declared = response.headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > self._max_entry:
                        raise DocumentTooLargeError(
                            f"{url}: {declared} bytes exceeds limit {self._max_entry}"
                        )
                    chunks: list[bytes] = []
                    size = 0
                    for chunk in response.iter_bytes():
                        size += len(chunk)
                        if size > self._max_entry:
                            raise DocumentTooLargeError(f"{url}: more than {self._max_entry} bytes")
                        chunks.append(chunk)
                    return b"".join(chunks), response.headers.get("etag")
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
            raise ConnectorError(f"cannot fetch {shown(url)}: {exc}") from exc
        raise ConnectorError(f"cannot fetch {shown(url)}: more than {_MAX_REDIRECTS} redirects")


class _Http:
    """An HTTP client made on first use (most manifests fetch nothing), closed on exit."""

    def __init__(self, timeout: float, transport: httpx.BaseTransport | None) -> None:
        self._timeout = timeout
        self._transport = transport
        self._client: httpx.Client | None = None

    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=self._timeout, transport=self._transport)
        return self._client

    def __enter__(self) -> _Http:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._client is not None:
            self._client.close()


def _resolve(parsed: _Parsed) -> tuple[dict[str, _Record], dict[str, list[int]]]:
    """One record per id named by lines that are not tombstones (an id on two lines or more is
    hidden, naming them); and the ids only tombstones name, with their lines."""
    records: dict[str, _Record] = {}
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
            uri = next((r.uri or _uri_of(r) for r in lines if r.uri or _uri_of(r)), None)
            records[ident] = _Record(
                ident,
                numbers[0],
                lines[0].origin,
                error=f"id {shown(ident)} is on lines {', '.join(map(str, numbers))}: "
                f"no line wins, the document is hidden until one line names it",
                uri=uri,
            )
    return records, deleted


def _uri_of(record: _Record) -> str | None:
    uri = record.entry.get("uri") if record.entry is not None else None
    return uri if isinstance(uri, str) and uri else None


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


def _describe(exc: ValidationError) -> str:
    error = exc.errors()[0]
    loc = ".".join(str(part) for part in error["loc"]) or "line"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"key {loc}: {error['msg']} (got {shown(error.get('input'), 40)}){more}"


def _bare_etag(etag: str) -> str:
    return etag.strip().removeprefix("W/").strip('"')


def _etag_hash(etag: str) -> str:
    return ETAG + stable_hash(_bare_etag(etag))


def _url_prefix(name: str, prefix: str) -> tuple[str, str, str]:
    parts = urlsplit(prefix)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(
            f"source {name}: url_prefixes entry {prefix!r} must be an http(s)://host/ URL"
        )
    return parts.scheme, parts.netloc.lower(), parts.path or "/"


def from_options(name: str, options: dict[str, Any], base_dir: Path) -> ManifestConnector:
    """The ``manifest`` kind of a sources file. Options: ``path`` (the manifest), ``state_dir``,
    ``path_roots`` (relative to the sources file's folder), ``url_prefixes``,
    ``case_sensitive_ids``, ``max_entry_bytes``, ``max_manifest_bytes``, ``http_timeout_seconds``.
    """
    known = {
        "path",
        "state_dir",
        "path_roots",
        "url_prefixes",
        "case_sensitive_ids",
        "max_entry_bytes",
        "max_manifest_bytes",
        "http_timeout_seconds",
    }
    unknown = set(options) - known
    if unknown:
        raise ConfigurationError(f"source {name}: unknown manifest options {sorted(unknown)}")
    if not isinstance(options.get("path"), str | Path):
        raise ConfigurationError(f"source {name}: the manifest connector needs options.path")

    def local(value: Any) -> Path:
        path = Path(value)
        return path if path.is_absolute() else base_dir / path

    roots = options.get("path_roots")
    prefixes = options.get("url_prefixes", [])
    if roots is not None and not isinstance(roots, list):
        raise ConfigurationError(f"source {name}: path_roots must be a list of folders")
    if not isinstance(prefixes, list):
        raise ConfigurationError(f"source {name}: url_prefixes must be a list of URLs")
    try:
        return ManifestConnector(
            local(options["path"]),
            name,
            state_dir=local(options["state_dir"]) if options.get("state_dir") else None,
            case_sensitive_ids=bool(options.get("case_sensitive_ids", False)),
            path_roots=[local(r) for r in roots] if roots is not None else None,
            url_prefixes=[str(p) for p in prefixes],
            max_entry_bytes=int(options.get("max_entry_bytes", MAX_ENTRY_BYTES)),
            max_manifest_bytes=int(options.get("max_manifest_bytes", MAX_MANIFEST_BYTES)),
            http_timeout_seconds=float(options.get("http_timeout_seconds", 30.0)),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"source {name}: invalid manifest option: {exc}") from exc
