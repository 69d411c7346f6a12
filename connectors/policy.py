"""Permission policies (``.rag-acl.toml``) and how they combine down a tree of folders.

Shared by the connectors whose source is a tree (a directory, an S3 prefix): the connector reads
the bytes of each folder's policy file and the names of the folder's files, and this module turns
them into the ACL and classification of every file, failing closed. A policy file may sit in any
folder and applies to everything below it::

    inherit = true            # default; false drops the parent's *allow* list (never its deny)
    allow = ["group:hr"]      # principals: user:<id>, group:<id>, or "public"
    deny = ["user:mallory"]   # deny wins over allow, and is inherited by everything below
    public = false            # shorthand for allow = ["public"]
    classification = "confidential"  # a sensitivity label, inherited (see rag.classification)

    [files."salaries.csv"]    # a per-file override, with the same keys (a file of this folder)
    inherit = false
    allow = ["group:hr-leads"]

Ids are opaque Unicode strings in the canonical form of ``rag.identity`` (case-folded unless the
source is declared with ``case_sensitive_ids``). Everything wrong with a policy fails closed and
is named (file, line, bad value) in the problems list the caller passes (the listing's
``policy_errors``): a malformed policy (bad TOML, not UTF-8, an unknown key, a wrong type, an
invalid deny entry, a per-file override naming no file of its folder) hides every file it
governs, in its folder and below; an invalid allow entry is dropped (it could only have widened
access) and reported.
"""

from __future__ import annotations

import json
import logging
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError

from rag.errors import InvalidPrincipalError, PolicyError
from rag.identity import PUBLIC, canonical_principal, deny_forms, shown
from rag.models import Acl

log = logging.getLogger(__name__)

POLICY_FILE: Final = ".rag-acl.toml"


class RawRule(BaseModel):
    """The keys of a rule as written (a policy, a per-file override, a metadata sidecar)."""

    model_config = ConfigDict(extra="forbid")

    inherit: StrictBool = True
    allow: list[StrictStr] = Field(default_factory=list)
    deny: list[StrictStr] = Field(default_factory=list)
    public: StrictBool = False
    classification: StrictStr | None = None


class RawPolicy(RawRule):
    files: dict[str, RawRule] = Field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    """One level of the tree's permissions, in canonical principals."""

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
class Scope:
    """What governs the files of one folder: the folder's ACL (None: no policy here or above),
    its per-file overrides, its inherited classification, or the error of a broken policy here
    or above (everything below is hidden)."""

    acl: Acl | None
    files: Mapping[str, Rule] = field(default_factory=dict)
    error: str | None = None
    label: str | None = None

    def file(self, name: str, extra: Rule | None = None) -> tuple[Acl | None, str | None]:
        """The ACL and classification of the file ``name`` of this folder: the folder's, then its
        ``[files."name"]`` override, then ``extra`` (a rule more specific still, such as a
        metadata sidecar's), each applied to the one before. The ACL is None when there is none
        or when ``error`` is set (the caller lists the file with that error)."""
        if self.error is not None:
            return None, None
        acl, label = self.acl, self.label
        for rule in (self.files.get(name), extra):
            if rule is not None:
                acl = rule.apply(acl)
                label = rule.label or label
        return acl, label


ROOT: Final = Scope(None)
"""The scope above the source's root: no ACL, nothing broken."""


class PolicyReader:
    """Reads one policy file into rules; problems are fatal, dropped allow entries are not."""

    def __init__(self, rel: str, text: str, case_sensitive: bool) -> None:
        self.rel = rel
        self.text = text
        self.case_sensitive = case_sensitive
        self.warnings: list[str] = []

    def read(self) -> tuple[Rule, dict[str, Rule]]:
        try:
            data = tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"{self.rel}: invalid TOML: {exc}") from None
        try:
            raw = RawPolicy.model_validate(data)
        except ValidationError as exc:
            raise PolicyError(self.describe(exc)) from None
        files = {name: self.rule(rule, f"files.{name!r}") for name, rule in raw.files.items()}
        return self.rule(raw, ""), files

    def rule(self, raw: RawRule, where: str) -> Rule:
        """The canonical rule of ``raw`` (``where`` names it in messages). An invalid deny entry
        raises :class:`PolicyError`; an invalid allow entry is dropped with a warning."""
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
        return Rule(raw.inherit, frozenset(allow), frozenset(deny), label)

    def describe(self, exc: ValidationError) -> str:
        """The first validation problem, with its line and the bad value."""
        error = exc.errors()[0]
        loc = ".".join(str(part) for part in error["loc"])
        value = error.get("input")
        needle = str(error["loc"][-1]) if error["type"] == "extra_forbidden" else value
        key = str(error["loc"][0]) if error["loc"] else None
        return (
            f"{self.rel}: line {self.line_of(needle, key)}: key {loc}: "
            f"{error['msg']} "
            f"(got {shown(value, 40)})"
        )

    def line_of(self, needle: Any, key: str | None = None) -> int | str:
        """The first line that mentions ``needle`` (raw or escaped as TOML and JSON write it),
        else the first that sets ``key``, else '?'."""
        lines = self.text.splitlines()
        if isinstance(needle, str | int | bool) and needle != "":
            text = str(needle).lower() if isinstance(needle, bool) else str(needle)
            forms = {text, json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1]}
            for number, line in enumerate(lines, start=1):
                if any(f in line or f.lower() in line.lower() for f in forms):
                    return number
        if key:
            for number, line in enumerate(lines, start=1):
                stripped = line.lstrip()
                if stripped.startswith(key) or stripped.startswith(f'"{key}"'):
                    return number
        return "?"


def enter(
    parent: Scope, rel: str, data: bytes | None, case_sensitive: bool, problems: list[str]
) -> Scope:
    """The scope of a folder below ``parent`` whose policy file ``rel`` holds ``data`` (None:
    the folder has no policy). Problems are appended to ``problems``; a broken policy (or one
    broken above) gives a scope that hides everything it governs."""
    if parent.error is not None or data is None:
        return Scope(parent.acl, {}, parent.error, parent.label)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return broken(f"{rel}: not UTF-8 ({exc.reason} at byte {exc.start})", problems)
    reader = PolicyReader(rel, text, case_sensitive)
    try:
        rule, files = reader.read()
    except PolicyError as exc:
        return broken(str(exc), problems)
    finally:
        problems.extend(reader.warnings)
    return Scope(rule.apply(parent.acl), files, label=rule.label or parent.label)


def check_overrides(here: Scope, rel: str, names: Collection[str], problems: list[str]) -> Scope:
    """A per-file override of the policy ``rel`` must name a file of its folder (``names``),
    exactly: a typo would otherwise leave that file under the wider folder ACL."""
    if not here.files:
        return here
    for key in sorted(here.files):
        if key in names:
            continue
        near = sorted(n for n in names if n.casefold() == key.casefold())
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        kind = "a path, not a file name" if "/" in key or "\\" in key else "no file"
        return broken(f"{rel}: [files.{key!r}] names {kind} of this folder{hint}", problems)
    return here


def broken(problem: str, problems: list[str]) -> Scope:
    """The scope below a broken policy: nothing has an ACL, everything says why."""
    log.error("policy error, hiding what it governs: %s", problem)
    problems.append(problem)
    return Scope(None, {}, f"policy error: {problem}")
