"""The DirectorySource protocol: a group directory lists its users (with every alias they are
known by) and its groups (with their direct members, users and groups). Every id and alias is in
the canonical form of ``rag.identity.canonical_id``, so it matches ACL principals."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol, runtime_checkable

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator

from rag.errors import InvalidPrincipalError
from rag.identity import canonical_id

log = logging.getLogger(__name__)


def canonical_names(values: Iterable[object]) -> frozenset[str]:
    """The canonical forms of ``values``; invalid ones (empty, control characters) are dropped."""
    if isinstance(values, str):
        values = (values,)
    names: set[str] = set()
    for value in values:
        try:
            names.add(canonical_id(value))
        except InvalidPrincipalError as exc:
            log.warning("dropped an invalid directory name: %s", exc)
    return frozenset(names)


CanonicalId = Annotated[str, BeforeValidator(canonical_id)]
"""An id in canonical form; an invalid one is an InvalidPrincipalError."""
Names = Annotated[frozenset[str], BeforeValidator(canonical_names)]
"""Canonical names; invalid ones dropped."""

Progress = Callable[[int, int | None], None]
"""``progress(done, total)``: how far a sync is; ``total`` is None while it is unknown (an LDAP
paged search announces none, a SCIM listing only once its first page is in)."""


class _Entry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: CanonicalId
    aliases: Names = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _id_is_an_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and "id" in data:
            aliases = data.get("aliases", ())
            aliases = (aliases,) if isinstance(aliases, str) else tuple(aliases)
            data = {**data, "aliases": (*aliases, data["id"])}
        return data


class DirectoryUser(_Entry):
    """A user: the canonical id, and every alias (e-mail, UPN, ``CORP\\alice``, SID, object id,
    DN), the id included."""


class DirectoryGroup(_Entry):
    """A group, its aliases (DN, SID, ...), and its direct members by id."""

    member_users: Names = frozenset()
    member_groups: Names = frozenset()


@dataclass(frozen=True)
class DirectorySnapshot:
    """What a directory holds now. ``complete`` is False when any part could not be listed: such
    a snapshot is never applied. ``errors`` name what was skipped (an entry with an invalid id, a
    member that names nothing listed) whether or not the snapshot is complete."""

    source: str
    users: tuple[DirectoryUser, ...]
    groups: tuple[DirectoryGroup, ...]
    complete: bool
    errors: tuple[str, ...] = field(default=())


@runtime_checkable
class DirectorySource(Protocol):
    @property
    def name(self) -> str:
        """Where the directory comes from (for summaries and logs)."""
        ...

    def snapshot(self, progress: Progress | None = None) -> DirectorySnapshot:
        """Read the whole directory; DirectoryError when it cannot be read. ``progress`` is
        told the entries (users and groups) read so far, as they come in."""
        ...


def unique_ids(preferred: Sequence[str | None], fallback: Sequence[str]) -> list[str]:
    """Per entry its preferred id, or its fallback (a DN, a SCIM id) where the preferred one is
    missing, invalid, or shared with another entry: a shared name identifies nobody."""
    keys: list[str | None] = []
    for name in preferred:
        try:
            keys.append(None if name is None else canonical_id(name))
        except InvalidPrincipalError:
            keys.append(None)
    counts = Counter(k for k in keys if k is not None)
    return [
        key if key is not None and counts[key] == 1 else alt
        for key, alt in zip(keys, fallback, strict=True)
    ]
