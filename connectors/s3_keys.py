"""The listed keys of an S3 prefix as a folder tree, and the policy scope of each folder: what
decides which listed objects are documents and which ACL governs each (see :mod:`connectors.s3`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from connectors.policy import POLICY_FILE, ROOT, Scope, broken, check_overrides, enter
from connectors.sidecar import MAX_SIDECAR_BYTES, SIDECAR_SUFFIX

log = logging.getLogger(__name__)

MAX_POLICY_BYTES: Final = 1024 * 1024


@dataclass(frozen=True)
class S3Object:
    key: str
    rel: str  # the key below the prefix
    size: int
    etag: str
    modified: datetime

    @property
    def folder(self) -> str:
        return self.rel.rpartition("/")[0]

    @property
    def name(self) -> str:
        return self.rel.rpartition("/")[2]


@dataclass
class Pages:
    """What the paginated listing returned, and whether it is the whole prefix."""

    objects: list[S3Object] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    last_key: str | None = None
    ordered: bool = True  # keys came in ascending order (as S3 general purpose buckets list)

    def proves_absent(self, key: str) -> bool:
        """True if ``key`` would have been listed by now: it is not there."""
        if not self.errors:
            return True
        return self.ordered and self.last_key is not None and key <= self.last_key


@dataclass
class KeyTree:
    """The listed keys as folders: policies, documents, sidecars and each folder's file names."""

    policies: dict[str, S3Object] = field(default_factory=dict)  # folder -> its policy object
    documents: list[S3Object] = field(default_factory=list)
    sidecars: dict[str, S3Object] = field(default_factory=dict)  # document rel -> its sidecar
    names: dict[str, set[str]] = field(default_factory=dict)  # folder -> names of its objects

    def folders(self) -> list[str]:
        """Every folder that holds a document or a policy, with its ancestors, parents first."""
        seen = {""}
        for folder in [*self.policies, *(d.folder for d in self.documents)]:
            parts = folder.split("/") if folder else []
            seen.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return sorted(seen, key=lambda f: (f.count("/") + (1 if f else 0), f))


@dataclass
class ListingRun:
    """One listing in progress: the pages, their tree, the policy and sidecar bytes read (and
    why some could not be), and the policy problems found so far."""

    pages: Pages
    tree: KeyTree
    bodies: dict[str, bytes]
    failed: dict[str, str]
    policy_errors: list[str] = field(default_factory=list)


def key_tree(objects: Iterable[S3Object]) -> KeyTree:
    """Sort the listed keys into policies, documents and sidecars. A key with an empty path
    segment (a folder marker ``a/``, ``a//b``, ``/a``) has no place in a folder tree (two keys
    could name one folder's policy): it is skipped, with a warning."""
    tree = KeyTree()
    listed: set[str] = set()
    candidates: dict[str, S3Object] = {}
    skipped: list[str] = []
    for obj in objects:
        if "" in obj.rel.split("/"):
            if obj.rel and not obj.rel.endswith("/"):
                skipped.append(obj.key)  # folder markers are expected; the others are odd
            continue
        tree.names.setdefault(obj.folder, set()).add(obj.name)
        if obj.folder and any(part.startswith(".") for part in obj.folder.split("/")):
            continue  # in a hidden folder
        if obj.name == POLICY_FILE:
            tree.policies[obj.folder] = obj
        elif obj.name.startswith("."):
            continue
        elif obj.name.endswith(SIDECAR_SUFFIX) and len(obj.name) > len(SIDECAR_SUFFIX):
            candidates[obj.rel[: -len(SIDECAR_SUFFIX)]] = obj
        else:
            tree.documents.append(obj)
            listed.add(obj.rel)
    tree.sidecars = {rel: obj for rel, obj in candidates.items() if rel in listed}
    if skipped:
        log.warning(
            "%d keys with an empty path segment are not documents: %s", len(skipped), skipped[:5]
        )
    return tree


def size_limit(name: str) -> int:
    """The most bytes a policy or a sidecar of this name may have."""
    return MAX_POLICY_BYTES if name == POLICY_FILE else MAX_SIDECAR_BYTES


def folder_scopes(run: ListingRun, prefix: str, case_sensitive: bool) -> dict[str, Scope | None]:
    """Each folder's scope, parents first; None where its policies are not known (a policy
    could not be read, or a partial listing did not get far enough to tell)."""
    scopes: dict[str, Scope | None] = {}
    for folder in run.tree.folders():
        parent = scopes[folder.rpartition("/")[0]] if folder else ROOT
        scopes[folder] = (
            None if parent is None else _scope(run, folder, parent, prefix, case_sensitive)
        )
    return scopes


def _scope(
    run: ListingRun, folder: str, parent: Scope, prefix: str, case_sensitive: bool
) -> Scope | None:
    rel = f"{folder}/{POLICY_FILE}" if folder else POLICY_FILE
    policy = run.tree.policies.get(folder)
    if policy is None and not run.pages.proves_absent(prefix + rel):
        return None
    if policy is not None and policy.key in run.failed:
        return None
    if policy is not None and policy.size > MAX_POLICY_BYTES and parent.error is None:
        return broken(
            f"{rel}: {policy.size} bytes, over the {MAX_POLICY_BYTES}-byte limit of a policy",
            run.policy_errors,
        )
    data = run.bodies.get(policy.key) if policy is not None else None
    here = enter(parent, rel, data, case_sensitive, run.policy_errors)
    names = run.tree.names.get(folder, set())
    here_prefix = f"{prefix}{folder}/" if folder else prefix
    if any(n not in names and not run.pages.proves_absent(here_prefix + n) for n in here.files):
        return None  # an override may name a file the partial listing has not reached
    return check_overrides(here, rel, names, run.policy_errors)
