"""The group directory: users, their aliases and their groups (nested groups expanded), synced
from LDAP/Active Directory or SCIM into ``<data_dir>/directory.sqlite`` beside the index.

    from rag.directory import open_directory, sync_directory
    summary = sync_directory(settings, progress=reporter)   # e.g. from `rag directory sync`
    who = open_directory(settings).resolve("CORP\\\\alice")   # id, aliases, transitive groups
"""

from __future__ import annotations

from pathlib import Path

from rag.config import DirectorySettings, Settings
from rag.directory.base import (
    DirectoryGroup,
    DirectorySnapshot,
    DirectorySource,
    DirectoryUser,
    Progress,
)
from rag.directory.store import DirectoryStore, DirectorySyncSummary, ResolvedUser
from rag.errors import ConfigurationError

__all__ = [
    "DirectoryGroup",
    "DirectorySnapshot",
    "DirectorySource",
    "DirectoryStore",
    "DirectorySyncSummary",
    "DirectoryUser",
    "Progress",
    "ResolvedUser",
    "build_source",
    "directory_path",
    "open_directory",
    "sync_directory",
]


def directory_path(settings: Settings) -> Path:
    """Where the synced directory lives: ``<data_dir>/directory.sqlite``."""
    return settings.data_dir / "directory.sqlite"


def open_directory(settings: Settings) -> DirectoryStore:
    """The synced directory (opened lazily, on first use)."""
    return DirectoryStore(directory_path(settings))


def build_source(settings: DirectorySettings) -> DirectorySource:
    """The backend ``settings.backend`` names; ConfigurationError for ``none`` or a bad setup."""
    if settings.backend == "ldap":
        from rag.directory.ldap import LdapDirectory

        return LdapDirectory(settings)
    if settings.backend == "scim":
        from rag.directory.scim import ScimDirectory

        return ScimDirectory(settings)
    raise ConfigurationError("no directory configured: set directory.backend to ldap or scim")


def sync_directory(settings: Settings, progress: Progress | None = None) -> DirectorySyncSummary:
    """Sync the configured directory into the store; DirectoryError when the source fails (the
    stored directory is then unchanged), and an unapplied summary for an incomplete snapshot.
    ``progress(done, total)`` counts the entries read, then the users whose groups are
    expanded, then the write (``total`` is None while the source has not announced one)."""
    source = build_source(settings.directory)
    store = open_directory(settings)
    try:
        return store.sync(source, progress)
    finally:
        store.close()
