"""A connector for a directory tree, with ACLs from sidecar policy files.

Policy files are named ``.rag-acl.toml`` and may sit in any folder::

    # applies to this folder and everything below it
    inherit = true            # default; false replaces the parent's ACL instead of extending it
    allow = ["group:hr"]      # principals: user:<id>, group:<id>, or "public"
    deny = ["user:mallory"]   # deny wins over allow, at every level below
    public = false            # shorthand for allow = ["public"]

    [files."salaries.csv"]    # a per-file override, with the same keys
    inherit = false
    allow = ["group:hr-leads"]

A file under no policy has no ACL: the pipeline refuses to index it. A malformed policy makes the
files it governs unlisted (never indexed under a wider parent ACL) and the listing incomplete.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from connectors.base import Listing
from rag.errors import ConfigurationError, ConnectorError, InvalidPrincipalError
from rag.identity import PUBLIC, Principal
from rag.models import Acl, SourceDocument, stable_hash
from rag.parsing import mime_type_for

log = logging.getLogger(__name__)

POLICY_FILE: Final = ".rag-acl.toml"
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inherit: bool = True
    allow: frozenset[Principal] = Field(default=frozenset())
    deny: frozenset[Principal] = Field(default=frozenset())
    public: bool = False

    def apply(self, parent: Acl | None) -> Acl:
        allow = set(self.allow) | ({PUBLIC} if self.public else set())
        deny = set(self.deny)
        if self.inherit and parent is not None:
            allow |= parent.allow
            deny |= parent.deny
        return Acl(allow=frozenset(allow), deny=frozenset(deny))


class _Policy(_Rule):
    files: dict[str, _Rule] = Field(default_factory=dict)


@dataclass(frozen=True)
class _Folder:
    acl: Acl | None
    files: dict[str, _Rule]


class FilesystemConnector:
    """Lists the files under ``root``. Construction does no I/O."""

    def __init__(self, root: Path, name: str | None = None) -> None:
        self._root = Path(root)
        self._name = name or self._root.resolve().name or "filesystem"
        if not _NAME_RE.fullmatch(self._name):
            raise ConfigurationError(f"source name {self._name!r} must match {_NAME_RE.pattern}")

    @property
    def name(self) -> str:
        return self._name

    @property
    def root(self) -> Path:
        return self._root

    def list_documents(self) -> Listing:
        if not self._root.is_dir():
            raise ConnectorError(f"{self._root} is not a directory")
        documents: list[SourceDocument] = []
        errors: list[str] = []
        self._walk(self._root, None, documents, errors)
        documents.sort(key=lambda d: d.uri)
        return Listing(self._name, tuple(documents), complete=not errors, errors=tuple(errors))

    def _walk(
        self, folder: Path, inherited: Acl | None, out: list[SourceDocument], errors: list[str]
    ) -> None:
        try:
            here = self._policy(folder, inherited)
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except (OSError, ConnectorError) as exc:
            errors.append(f"{self._rel(folder) or '.'}: {exc}")
            log.warning("not listed: %s: %s", folder, exc)
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                if entry.is_dir(follow_symlinks=False):
                    self._walk(path, here.acl, out, errors)
                elif entry.is_file(follow_symlinks=False):
                    rule = here.files.get(entry.name)
                    acl = rule.apply(here.acl) if rule is not None else here.acl
                    out.append(self._document(path, acl))
            except OSError as exc:
                errors.append(f"{self._rel(path)}: {exc}")

    def _policy(self, folder: Path, inherited: Acl | None) -> _Folder:
        file = folder / POLICY_FILE
        if not file.exists():
            return _Folder(inherited, {})
        try:
            policy = _Policy.model_validate(tomllib.loads(file.read_text("utf-8")))
        except (
            tomllib.TOMLDecodeError,
            ValidationError,
            InvalidPrincipalError,
            UnicodeDecodeError,
        ) as exc:
            raise ConnectorError(f"malformed {POLICY_FILE}: {exc}".splitlines()[0]) from exc
        return _Folder(policy.apply(inherited), policy.files)

    def _document(self, path: Path, acl: Acl | None) -> SourceDocument:
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
            acl=acl,
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
