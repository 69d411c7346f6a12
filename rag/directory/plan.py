"""From a snapshot to the rows the store holds: aliases made unambiguous, members checked, and
the transitive user→group memberships computed. Pure; deterministic (rows sorted)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rag.directory.base import DirectoryGroup, DirectorySnapshot, DirectoryUser
from rag.directory.closure import user_closure
from rag.errors import DirectoryError

Membership = tuple[str, str]
"""(user id, group id)."""


@dataclass(frozen=True)
class DirectoryPlan:
    users: list[tuple[str]]
    user_aliases: list[tuple[str, str]]  # (alias, user id)
    groups: list[tuple[str]]
    group_aliases: list[tuple[str, str]]  # (alias, group id)
    members: list[tuple[str, str, str]]  # (group id, "user" | "group", member id)
    memberships: frozenset[Membership]  # transitive
    ambiguous_aliases: tuple[str, ...]  # "user:<alias>" / "group:<alias>", dropped
    dangling_members: int  # member ids naming no user or group of the snapshot


def plan(
    snapshot: DirectorySnapshot, progress: Callable[[int, int], None] | None = None
) -> DirectoryPlan:
    """The rows for ``snapshot``; ``progress(users done, users)`` as memberships are expanded."""
    users, groups = snapshot.users, snapshot.groups
    _unique("user", [u.id for u in users])
    _unique("group", [g.id for g in groups])
    user_aliases, ambiguous_users = _aliases(users)
    group_aliases, ambiguous_groups = _aliases(groups)
    user_ids = {u.id for u in users}
    group_ids = {g.id for g in groups}
    members: list[tuple[str, str, str]] = []
    dangling = 0
    direct: dict[str, set[str]] = {u: set() for u in user_ids}
    parents: dict[str, set[str]] = defaultdict(set)
    for g in groups:
        for m in g.member_users:
            if m in user_ids:
                members.append((g.id, "user", m))
                direct[m].add(g.id)
            else:
                dangling += 1
        for m in g.member_groups:
            if m in group_ids:
                members.append((g.id, "group", m))
                parents[m].add(g.id)
            else:
                dangling += 1
    closure = user_closure(direct, parents, progress)
    return DirectoryPlan(
        users=sorted((u,) for u in user_ids),
        user_aliases=user_aliases,
        groups=sorted((g,) for g in group_ids),
        group_aliases=group_aliases,
        members=sorted(members),
        memberships=frozenset((u, g) for u, held in closure.items() for g in held),
        ambiguous_aliases=tuple(
            sorted(
                [f"user:{a}" for a in ambiguous_users] + [f"group:{a}" for a in ambiguous_groups]
            )
        ),
        dangling_members=dangling,
    )


def _unique(kind: str, ids: Sequence[str]) -> None:
    twice = sorted(i for i, n in Counter(ids).items() if n > 1)
    if twice:
        raise DirectoryError(f"the directory lists the {kind} id(s) {twice[:5]} more than once")


def _aliases(
    entries: Sequence[DirectoryUser] | Sequence[DirectoryGroup],
) -> tuple[list[tuple[str, str]], list[str]]:
    """(alias, owner) rows. An entry's id names that entry alone; any other alias held by more
    than one entry is ambiguous and names nobody (it could only lend one's groups to another)."""
    ids = {e.id for e in entries}
    owners: dict[str, set[str]] = defaultdict(set)
    for e in entries:
        for alias in e.aliases:
            owners[alias].add(e.id)
    rows: list[tuple[str, str]] = []
    ambiguous: list[str] = []
    for alias, held_by in owners.items():
        if alias in ids:
            rows.append((alias, alias))
        elif len(held_by) == 1:
            rows.append((alias, next(iter(held_by))))
        else:
            ambiguous.append(alias)
    return sorted(rows), sorted(ambiguous)
