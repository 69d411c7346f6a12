"""Transitive group membership: iterative graph walks, so cycles end and depth has no limit."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final

REPORT_EVERY: Final = 1024
"""Users between two calls of ``user_closure``'s progress callback (and one at the end)."""


def reachable(edges: Mapping[str, Iterable[str]], start: Iterable[str]) -> set[str]:
    """Every node reachable from ``start`` along ``edges`` (``start`` included)."""
    seen = set(start)
    stack = list(seen)
    while stack:
        node = stack.pop()
        for nxt in edges.get(node, ()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def user_closure(
    direct: Mapping[str, Iterable[str]],
    parents: Mapping[str, Iterable[str]],
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, frozenset[str]]:
    """Each user's groups, transitively: ``direct`` maps a user to the groups they are a direct
    member of, ``parents`` a group to the groups it is a direct member of. Each group's
    ancestors are walked once. ``progress(users done, users)`` every ``REPORT_EVERY`` users."""
    ancestors: dict[str, frozenset[str]] = {}
    out: dict[str, frozenset[str]] = {}
    total = len(direct)
    for done, (user_id, groups) in enumerate(direct.items(), start=1):
        held: set[str] = set()
        for g in groups:
            if g not in ancestors:
                ancestors[g] = frozenset(reachable(parents, (g,)))
            held |= ancestors[g]
        out[user_id] = frozenset(held)
        if progress is not None and (done % REPORT_EVERY == 0 or done == total):
            progress(done, total)
    return out
