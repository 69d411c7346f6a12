"""The synced group directory, in SQLite beside the index (``<data_dir>/directory.sqlite``).

It holds users and their aliases, groups and their aliases, direct memberships, and the
transitive user→group memberships. A sync replaces it from a *complete* snapshot in one
transaction (rows diffed: unchanged rows are not rewritten); an incomplete snapshot, or a source
that fails, leaves it as it was. Readers (WAL) see the last committed sync.

A sync's ``progress(done, total)`` counts one sequence of steps: the entries the source read,
then the users whose groups were expanded, then one for the write.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from pydantic import BaseModel, ConfigDict

from rag.directory.base import DirectorySnapshot, DirectorySource, Progress
from rag.directory.plan import DirectoryPlan, Membership, plan
from rag.errors import DirectoryError
from rag.identity import canonical_id, group, user

log = logging.getLogger(__name__)

MAX_LISTED: Final = 1000
"""Memberships and aliases a summary lists (sorted); the counts are always complete."""

_TABLES: Final = {
    "users": ("id",),
    "user_aliases": ("alias", "user_id"),
    "groups": ("id",),
    "group_aliases": ("alias", "group_id"),
    "members": ("group_id", "kind", "member_id"),
    "memberships": ("user_id", "group_id"),
}
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS user_aliases (alias TEXT PRIMARY KEY, user_id TEXT NOT NULL)
    WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS user_aliases_by_user ON user_aliases (user_id);
CREATE TABLE IF NOT EXISTS groups (id TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS group_aliases (alias TEXT PRIMARY KEY, group_id TEXT NOT NULL)
    WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS group_aliases_by_group ON group_aliases (group_id);
CREATE TABLE IF NOT EXISTS members (group_id TEXT NOT NULL, kind TEXT NOT NULL,
    member_id TEXT NOT NULL, PRIMARY KEY (group_id, kind, member_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS memberships (user_id TEXT NOT NULL, group_id TEXT NOT NULL,
    PRIMARY KEY (user_id, group_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ResolvedUser(_Frozen):
    """A user as the directory knows them. ``found`` is False for an id no user holds (then
    ``user_id`` is the canonical form of the id asked for and there are no groups)."""

    found: bool
    user_id: str
    aliases: frozenset[str]
    groups: frozenset[str]
    """Canonical ids of every group the user is in, directly or through nested groups."""
    group_names: frozenset[str]
    """Every name of those groups (ids and aliases such as DNs and SIDs)."""

    def principals(self) -> frozenset[str]:
        """``user:<alias>`` for each alias and ``group:<name>`` for each group name."""
        return frozenset({*(user(a) for a in self.aliases), *(group(g) for g in self.group_names)})


class DirectorySyncSummary(_Frozen):
    """What one sync did. ``applied`` is False when the snapshot was incomplete: nothing was
    changed, and ``errors`` say why. Memberships are transitive (user id, group id) pairs."""

    source: str
    applied: bool
    complete: bool
    users: int
    groups: int
    memberships: int
    added: int
    removed: int
    added_memberships: tuple[Membership, ...] = ()
    removed_memberships: tuple[Membership, ...] = ()
    ambiguous_aliases: tuple[str, ...] = ()
    dangling_members: int = 0
    errors: tuple[str, ...] = ()
    seconds: float = 0.0


class _Read:
    """Passes a source's progress on, remembering how many entries it had read."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self.done = 0

    def __call__(self, done: int, total: int | None) -> None:
        self.done = done
        self._progress(done, total)


class DirectoryStore:
    """The directory database at ``path``; opened on first use (construction does no I/O)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self._path

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self._path, timeout=30, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._conn()
            db.execute(begin)
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def sync(
        self, source: DirectorySource, progress: Progress | None = None
    ) -> DirectorySyncSummary:
        """Read ``source`` and apply its snapshot. A source that fails raises DirectoryError
        before anything is changed."""
        started = time.monotonic()
        if progress is None:
            return self.apply(source.snapshot(), started=started)
        read = _Read(progress)
        snapshot = source.snapshot(read)
        return self.apply(snapshot, started=started, progress=progress, steps_before=read.done)

    def apply(
        self,
        snapshot: DirectorySnapshot,
        *,
        started: float | None = None,
        progress: Progress | None = None,
        steps_before: int = 0,
    ) -> DirectorySyncSummary:
        """Replace the stored directory with a complete ``snapshot``; refuse an incomplete one.
        ``progress`` counts on from ``steps_before`` (the entries read): the users whose groups
        are expanded, then one step for the write."""
        started = time.monotonic() if started is None else started
        if not snapshot.complete:
            log.warning(
                "directory %s: incomplete snapshot not applied: %s",
                snapshot.source,
                "; ".join(snapshot.errors) or "no reason given",
            )
            return DirectorySyncSummary(
                source=snapshot.source,
                applied=False,
                complete=False,
                users=len(snapshot.users),
                groups=len(snapshot.groups),
                memberships=0,
                added=0,
                removed=0,
                errors=snapshot.errors or ("the source reported an incomplete listing",),
                seconds=time.monotonic() - started,
            )
        total = steps_before + len(snapshot.users) + 1

        def expanded(done: int, _users: int) -> None:
            if progress is not None:
                progress(steps_before + done, total)

        expanded(0, len(snapshot.users))
        rows = plan(snapshot, expanded if progress is not None else None)
        try:
            with self._transaction("BEGIN IMMEDIATE") as db:
                before = {
                    (u, g) for u, g in db.execute("SELECT user_id, group_id FROM memberships")
                }
                self._replace(db, rows, snapshot.source)
        except (sqlite3.Error, OSError) as exc:
            raise DirectoryError(f"cannot write the directory at {self._path}: {exc}") from exc
        if progress is not None:
            progress(total, total)
        added = sorted(rows.memberships - before)
        removed = sorted(before - rows.memberships)
        summary = DirectorySyncSummary(
            source=snapshot.source,
            applied=True,
            complete=True,
            users=len(rows.users),
            groups=len(rows.groups),
            memberships=len(rows.memberships),
            added=len(added),
            removed=len(removed),
            added_memberships=tuple(added[:MAX_LISTED]),
            removed_memberships=tuple(removed[:MAX_LISTED]),
            ambiguous_aliases=rows.ambiguous_aliases[:MAX_LISTED],
            dangling_members=rows.dangling_members,
            errors=snapshot.errors,
            seconds=time.monotonic() - started,
        )
        log.info(
            "directory %s synced: %d users, %d groups, +%d/-%d memberships",
            summary.source,
            summary.users,
            summary.groups,
            summary.added,
            summary.removed,
        )
        return summary

    def _replace(self, db: sqlite3.Connection, rows: DirectoryPlan, source: str) -> None:
        new: dict[str, Sequence[tuple[str, ...]]] = {
            "users": rows.users,
            "user_aliases": rows.user_aliases,
            "groups": rows.groups,
            "group_aliases": rows.group_aliases,
            "members": rows.members,
            "memberships": sorted(rows.memberships),
        }
        for table, columns in _TABLES.items():
            cols = ", ".join(columns)
            old = set(db.execute(f"SELECT {cols} FROM {table}"))  # noqa: S608 - fixed names
            wanted = set(new[table])
            where = " AND ".join(f"{c} = ?" for c in columns)
            marks = ", ".join("?" * len(columns))
            db.executemany(f"DELETE FROM {table} WHERE {where}", sorted(old - wanted))  # noqa: S608
            db.executemany(
                f"INSERT INTO {table} ({cols}) VALUES ({marks})",  # noqa: S608 - fixed names
                sorted(wanted - old),
            )
        db.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [("source", source), ("synced_at", datetime.now(UTC).isoformat())],
        )

    def resolve(self, user_id: str) -> ResolvedUser:
        """The user any alias names (e-mail, UPN, ``CORP\\alice``, SID, object id, DN): their
        canonical id, aliases and transitive groups. InvalidPrincipalError for an invalid id."""
        key = canonical_id(user_id)
        unknown = ResolvedUser(
            found=False,
            user_id=key,
            aliases=frozenset({key}),
            groups=frozenset(),
            group_names=frozenset(),
        )
        if self._db is None and not self._path.exists():
            return unknown  # never synced: reads create nothing
        try:
            with self._transaction("BEGIN") as db:
                row = db.execute(
                    "SELECT user_id FROM user_aliases WHERE alias = ?", (key,)
                ).fetchone()
                if row is None:
                    return unknown
                uid = row[0]
                aliases = db.execute("SELECT alias FROM user_aliases WHERE user_id = ?", (uid,))
                alias_set = frozenset(a for (a,) in aliases)
                groups = frozenset(
                    g
                    for (g,) in db.execute(
                        "SELECT group_id FROM memberships WHERE user_id = ?", (uid,)
                    )
                )
                names = frozenset(
                    n
                    for (n,) in db.execute(
                        "SELECT a.alias FROM memberships m JOIN group_aliases a "
                        "ON a.group_id = m.group_id WHERE m.user_id = ?",
                        (uid,),
                    )
                )
        except (sqlite3.Error, OSError) as exc:
            raise DirectoryError(f"cannot read the directory at {self._path}: {exc}") from exc
        return ResolvedUser(
            found=True, user_id=uid, aliases=alias_set, groups=groups, group_names=names
        )

    def synced_at(self) -> datetime | None:
        """When the last sync was applied; None if never."""
        if self._db is None and not self._path.exists():
            return None
        try:
            with self._transaction("BEGIN") as db:
                row = db.execute("SELECT value FROM meta WHERE key = 'synced_at'").fetchone()
        except (sqlite3.Error, OSError) as exc:
            raise DirectoryError(f"cannot read the directory at {self._path}: {exc}") from exc
        return None if row is None else datetime.fromisoformat(row[0])

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
