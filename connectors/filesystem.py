"""A connector for a directory tree, with ACLs from sidecar policy files.

Policy files are named ``.rag-acl.toml`` and may sit in any folder (read by
:mod:`connectors.policy`, which the S3 connector shares)::

    # applies to this folder and everything below it
    inherit = true            # default; false drops the parent's *allow* list (never its deny)
    allow = ["group:hr"]      # principals: user:<id>, group:<id>, or "public"
    deny = ["user:mallory"]   # deny wins over allow, and is inherited by everything below
    public = false            # shorthand for allow = ["public"]
    classification = "confidential"  # a sensitivity label, inherited (see rag.classification)

    [files."salaries.csv"]    # a per-file override, with the same keys (a file of this folder)
    inherit = false
    allow = ["group:hr-leads"]

Ids are opaque Unicode strings in the canonical form of ``rag.identity`` (case-folded unless the
source is declared with ``case_sensitive_ids``). A file under no policy has no ACL: the pipeline
refuses to index it. Everything wrong with a policy fails closed and is named in the listing's
``policy_errors`` (file, line, bad value):

- a malformed policy (bad TOML, unknown key, wrong type, an invalid deny entry, a per-file
  override naming no file of its folder): every file it governs, in its folder and below, is
  listed without an ACL, so it is hidden and quarantined with that reason until fixed;
- an invalid allow entry is dropped (it could only have widened access) and reported.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.base import SOURCE_NAME, Listing
from connectors.policy import POLICY_FILE, ROOT, Scope, check_overrides, enter
from rag.errors import ConfigurationError, ConnectorError
from rag.models import Acl, SourceDocument, stable_hash
from rag.parsing import mime_type_for

log = logging.getLogger(__name__)


@dataclass
class _Walk:
    documents: list[SourceDocument] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    policy_errors: list[str] = field(default_factory=list)


class FilesystemConnector:
    """Lists the files under ``root``. Construction does no I/O.

    ``case_sensitive_ids``: the policies' ids are case-sensitive (stored as ``user.cs:`` and
    ``group.cs:`` principals); by default ids are case-insensitive.
    """

    def __init__(
        self, root: Path, name: str | None = None, *, case_sensitive_ids: bool = False
    ) -> None:
        self._root = Path(root)
        self._name = name or self._root.resolve().name or "filesystem"
        self._case_sensitive = case_sensitive_ids
        if not SOURCE_NAME.fullmatch(self._name):
            raise ConfigurationError(f"source name {self._name!r} must match {SOURCE_NAME.pattern}")

    @property
    def name(self) -> str:
        return self._name

    @property
    def root(self) -> Path:
        return self._root

    def list_documents(self) -> Listing:
        if not self._root.is_dir():
            raise ConnectorError(f"{self._root} is not a directory")
        walk = _Walk()
        self._walk(self._root, ROOT, walk)
        walk.documents.sort(key=lambda d: d.uri)
        return Listing(
            self._name,
            tuple(walk.documents),
            complete=not walk.errors,
            errors=tuple(walk.errors),
            policy_errors=tuple(walk.policy_errors),
        )

    def _walk(self, folder: Path, parent: Scope, walk: _Walk) -> None:
        try:
            here = self._policy(folder, parent, walk)
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            walk.errors.append(f"{self._rel(folder) or '.'}: {exc}")
            log.warning("not listed: %s: %s", folder, exc)
            return
        here = self._check_overrides(folder, here, entries, walk)
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                if entry.is_dir(follow_symlinks=False):
                    self._walk(path, here, walk)
                elif entry.is_file(follow_symlinks=False):
                    acl, label = here.file(entry.name)
                    walk.documents.append(self._document(path, acl, here.error, label))
            except OSError as exc:
                walk.errors.append(f"{self._rel(path)}: {exc}")

    def _policy(self, folder: Path, parent: Scope, walk: _Walk) -> Scope:
        file = folder / POLICY_FILE
        data = file.read_bytes() if parent.error is None and file.exists() else None
        return enter(parent, self._rel(file), data, self._case_sensitive, walk.policy_errors)

    def _check_overrides(
        self, folder: Path, here: Scope, entries: list[os.DirEntry[str]], walk: _Walk
    ) -> Scope:
        if not here.files:
            return here
        names = {e.name for e in entries if e.is_file(follow_symlinks=False)}
        rel = self._rel(folder / POLICY_FILE)
        return check_overrides(here, rel, names, walk.policy_errors)

    def _document(
        self, path: Path, acl: Acl | None, acl_error: str | None, label: str | None
    ) -> SourceDocument:
        rel = self._rel(path)
        stat = path.stat()
        with path.open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        return SourceDocument(
            source=self._name,
            id=stable_hash(self._name, rel),
            uri=rel,
            title=path.stem.replace("_", " ").replace("-", " "),
            mime_type=mime_type_for(path.name) or "application/octet-stream",
            content_hash=digest,
            size_bytes=stat.st_size,
            modified_at=datetime.fromtimestamp(stat.st_mtime, tz=UTC),
            acl=None if acl_error is not None else acl,
            acl_error=acl_error,
            classification=label,
            metadata={"path": rel},
        )

    def _rel(self, path: Path) -> str:
        return path.relative_to(self._root).as_posix() if path != self._root else ""

    def read(self, document: SourceDocument) -> bytes:
        path = self._root / document.uri
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ConnectorError(f"cannot read {document.uri}: {exc}") from exc


def from_options(name: str, options: dict[str, Any], base_dir: Path) -> FilesystemConnector:
    """The ``filesystem`` kind of a sources file: options ``root`` (relative to the sources
    file's folder) and ``case_sensitive_ids``."""
    if "root" not in options:
        raise ConfigurationError(f"source {name}: the filesystem connector needs options.root")
    unknown = set(options) - {"root", "case_sensitive_ids"}
    if unknown:
        raise ConfigurationError(f"source {name}: unknown filesystem options {sorted(unknown)}")
    root = Path(options["root"])
    return FilesystemConnector(
        root if root.is_absolute() else base_dir / root,
        name,
        case_sensitive_ids=bool(options.get("case_sensitive_ids", False)),
    )
