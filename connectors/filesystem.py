"""A connector for a directory tree, with ACLs from sidecar policy files.

Policy files are named ``.rag-acl.toml`` and may sit in any folder::

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
import json
import logging
import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError

from connectors.base import Listing
from rag.errors import ConfigurationError, ConnectorError, InvalidPrincipalError, PolicyError
from rag.identity import PUBLIC, canonical_principal, deny_forms, shown
from rag.models import Acl, SourceDocument, stable_hash
from rag.parsing import mime_type_for

log = logging.getLogger(__name__)

POLICY_FILE: Final = ".rag-acl.toml"
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")


class _RawRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inherit: StrictBool = True
    allow: list[StrictStr] = Field(default_factory=list)
    deny: list[StrictStr] = Field(default_factory=list)
    public: StrictBool = False
    classification: StrictStr | None = None


class _RawPolicy(_RawRule):
    files: dict[str, _RawRule] = Field(default_factory=dict)


@dataclass(frozen=True)
class _Rule:
    inherit: bool
    allow: frozenset[str]
    deny: frozenset[str]
    label: str | None = None  # classification; None: the parent's

    def apply(self, parent: Acl | None) -> Acl:
        """Deny always inherits; ``inherit = false`` resets only the allow list."""
        allow = set(self.allow)
        deny = set(self.deny)
        if parent is not None:
            deny |= parent.deny
            if self.inherit:
                allow |= parent.allow
        return Acl(allow=frozenset(allow), deny=frozenset(deny))


@dataclass(frozen=True)
class _Folder:
    acl: Acl | None
    files: dict[str, _Rule] = field(default_factory=dict)
    error: str | None = None  # a broken policy here or above: everything below is hidden
    label: str | None = None  # classification of what is below, inherited


class _PolicyReader:
    """Reads one policy file into rules; problems are fatal, dropped allow entries are not."""

    def __init__(self, rel: str, text: str, case_sensitive: bool) -> None:
        self.rel = rel
        self.text = text
        self.case_sensitive = case_sensitive
        self.warnings: list[str] = []

    def read(self) -> tuple[_Rule, dict[str, _Rule]]:
        try:
            data = tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"{self.rel}: invalid TOML: {exc}") from None
        try:
            raw = _RawPolicy.model_validate(data)
        except ValidationError as exc:
            raise PolicyError(self._describe(exc)) from None
        files = {name: self._rule(rule, f"files.{name!r}") for name, rule in raw.files.items()}
        return self._rule(raw, ""), files

    def _rule(self, raw: _RawRule, where: str) -> _Rule:
        prefix = f"{where}." if where else ""
        allow: set[str] = {PUBLIC} if raw.public else set()
        for entry in raw.allow:
            try:
                allow.add(canonical_principal(entry, case_sensitive=self.case_sensitive))
            except InvalidPrincipalError as exc:
                line = self.line_of(entry, "allow")
                self.warnings.append(f"{self.rel}: line {line}: {prefix}allow entry dropped: {exc}")
        deny: set[str] = set()
        for entry in raw.deny:
            try:
                principal = canonical_principal(entry, case_sensitive=self.case_sensitive)
            except InvalidPrincipalError as exc:
                line = self.line_of(entry, "deny")
                raise PolicyError(
                    f"{self.rel}: line {line}: {prefix}deny entry is invalid, "
                    f"so nothing it governs can be shown: {exc}"
                ) from None
            deny |= deny_forms(principal)
        label = raw.classification.strip().lower() if raw.classification else None
        return _Rule(raw.inherit, frozenset(allow), frozenset(deny), label)

    def _describe(self, exc: ValidationError) -> str:
        error = exc.errors()[0]
        loc = ".".join(str(part) for part in error["loc"])
        value = error.get("input")
        needle = str(error["loc"][-1]) if error["type"] == "extra_forbidden" else value
        return (
            f"{self.rel}: line {self.line_of(needle, str(error['loc'][0]))}: key {loc}: "
            f"{error['msg']} "
            f"(got {shown(value, 40)})"
        )

    def line_of(self, needle: Any, key: str | None = None) -> int | str:
        """The first line that mentions ``needle`` (raw or escaped as TOML writes it), else the
        first that sets ``key``, else '?'."""
        lines = self.text.splitlines()
        if isinstance(needle, str | int | bool) and needle != "":
            text = str(needle).lower() if isinstance(needle, bool) else str(needle)
            forms = {text, json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1]}
            for number, line in enumerate(lines, start=1):
                if any(f in line or f.lower() in line.lower() for f in forms):
                    return number
        if key:
            for number, line in enumerate(lines, start=1):
                if line.lstrip().startswith(key):
                    return number
        return "?"


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
        walk = _Walk()
        self._walk(self._root, _Folder(None), walk)
        walk.documents.sort(key=lambda d: d.uri)
        return Listing(
            self._name,
            tuple(walk.documents),
            complete=not walk.errors,
            errors=tuple(walk.errors),
            policy_errors=tuple(walk.policy_errors),
        )

    def _walk(self, folder: Path, parent: _Folder, walk: _Walk) -> None:
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
                    rule = here.files.get(entry.name)
                    acl = rule.apply(here.acl) if rule is not None else here.acl
                    label = (rule.label if rule is not None else None) or here.label
                    walk.documents.append(self._document(path, acl, here.error, label))
            except OSError as exc:
                walk.errors.append(f"{self._rel(path)}: {exc}")

    def _policy(self, folder: Path, parent: _Folder, walk: _Walk) -> _Folder:
        file = folder / POLICY_FILE
        if parent.error is not None or not file.exists():
            return _Folder(parent.acl, {}, parent.error, parent.label)
        rel = self._rel(file)
        try:
            text = file.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            return self._broken(f"{rel}: not UTF-8 ({exc.reason} at byte {exc.start})", walk)
        reader = _PolicyReader(rel, text, self._case_sensitive)
        try:
            rule, files = reader.read()
        except PolicyError as exc:
            return self._broken(str(exc), walk)
        finally:
            walk.policy_errors.extend(reader.warnings)
        return _Folder(rule.apply(parent.acl), files, label=rule.label or parent.label)

    def _check_overrides(
        self, folder: Path, here: _Folder, entries: list[os.DirEntry[str]], walk: _Walk
    ) -> _Folder:
        """A per-file override must name a file of its folder, exactly: a typo would otherwise
        leave that file under the wider folder ACL."""
        if not here.files:
            return here
        names = {e.name for e in entries if e.is_file(follow_symlinks=False)}
        for key in sorted(here.files):
            if key in names:
                continue
            near = sorted(n for n in names if n.casefold() == key.casefold())
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            kind = "a path, not a file name" if "/" in key or "\\" in key else "no file"
            rel = self._rel(folder / POLICY_FILE)
            return self._broken(f"{rel}: [files.{key!r}] names {kind} of this folder{hint}", walk)
        return here

    def _broken(self, problem: str, walk: _Walk) -> _Folder:
        log.error("policy error, hiding what it governs: %s", problem)
        walk.policy_errors.append(problem)
        return _Folder(None, {}, f"policy error: {problem}")

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
