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

The code: this module (the connector), ``manifest_lines`` (reading one line: entries,
tombstones, the header, broken lines), ``manifest_snapshot`` (the snapshot, merging, locking),
``manifest_documents`` (records to documents: ACLs, hidden documents) and ``manifest_content``
(hashing and reading texts, files and URLs within ``path_roots`` and ``url_prefixes``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import httpx
from pydantic import ValidationError

from connectors.base import SOURCE_NAME, Listing
from connectors.manifest_content import ETAG, HIDDEN, UNAVAILABLE, ContentReader
from connectors.manifest_documents import DocumentBuilder, Listed
from connectors.manifest_lines import (
    MANIFEST_VERSION,
    Entry,
    Record,
    describe,
    read_manifest,
    resolve,
)
from connectors.manifest_snapshot import SNAPSHOT_VERSION, SnapshotStore
from rag.errors import ConfigurationError, ConnectorError
from rag.models import SourceDocument

__all__ = [
    "ETAG",
    "HIDDEN",
    "MANIFEST_VERSION",
    "MAX_ENTRY_BYTES",
    "MAX_MANIFEST_BYTES",
    "SNAPSHOT_VERSION",
    "UNAVAILABLE",
    "ManifestConnector",
    "from_options",
]

log = logging.getLogger(__name__)

MAX_ENTRY_BYTES: Final = 50 * 1024 * 1024
MAX_MANIFEST_BYTES: Final = 4 * 1024**3


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
        self._content = ContentReader(
            name,
            self._path.parent,
            roots=path_roots if path_roots is not None else [self._path.parent],
            url_prefixes=url_prefixes,
            max_entry_bytes=max_entry_bytes,
            http_timeout_seconds=http_timeout_seconds,
            transport=transport,
        )
        self._documents = DocumentBuilder(name, case_sensitive_ids, self._content)
        self._snapshot = SnapshotStore(self._state_dir, name)
        self._max_line = 6 * max_entry_bytes + 1024 * 1024
        self._max_manifest = max_manifest_bytes

    @property
    def name(self) -> str:
        return self._name

    @property
    def snapshot_path(self) -> Path:
        return self._snapshot.path

    def list_documents(self) -> Listing:
        if not self._path.is_file():
            raise ConnectorError(f"cannot read the manifest {self._path}: no such file")
        try:
            self._state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConnectorError(
                f"cannot create the state folder {self._state_dir}: {exc}"
            ) from exc
        with self._snapshot.locked():
            parsed = read_manifest(self._path, self._max_line, self._max_manifest)
            records, deleted = resolve(parsed)
            snapshot, errors = self._snapshot.merge(parsed, records, deleted, self._path.name)
        complete = not errors
        listed = Listed(errors=errors)
        with self._content.http() as http:
            for record in snapshot.records.values():
                document = self._documents.document(record, parsed.modified_at, http, listed)
                listed.documents.append(document)
        if not complete:  # deletion by omission is off: a tombstone hides what it names
            for ident, lines in sorted(deleted.items()):
                reason = (
                    f"deleted by line {', '.join(map(str, lines))}, and hidden rather than "
                    f"removed because the listing is incomplete"
                )
                uri = snapshot.removed.get(ident, ident)
                record = Record(ident, lines[-1], self._path.name, error=reason, uri=uri)
                listed.documents.append(self._documents.hidden(record, parsed.modified_at))
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

    def read(self, document: SourceDocument) -> bytes:
        record = self._snapshot.record(document)
        if record.entry is None:
            raise ConnectorError(f"{document.uri}: hidden: {record.error}")
        try:
            entry = Entry.model_validate(record.entry)
        except ValidationError as exc:
            raise ConnectorError(f"{document.uri}: {describe(exc)}") from None
        return self._content.read(document, entry)


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
