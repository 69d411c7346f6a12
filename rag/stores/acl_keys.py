"""Compact ACL keys: a search filter whose size does not grow with the caller's groups.

Every chunk row carries ``acl_key``, the content digest of its ACL (:meth:`rag.models.Acl.digest`,
written in the same row write as its ``allow`` and ``deny``), and a registry beside the chunks
(a LanceDB table, an OpenSearch side index) holds each distinct ACL once, by its key. A caller
with many principals is resolved once into the keys they may read (exactly
:meth:`~rag.models.Acl.permits`: an allowed principal and no denied one), and the search filters
on ``acl_key IN (those keys)`` instead of on every principal.

Why this fails closed:

- A key is the digest of the ACL's content, so the ACL a key stands for can never change: a
  registry row is immutable, and whether a principal set may read a key is a fixed fact. An
  ACL change (a revocation, a narrowing, a tombstone) writes the chunk's *new* key in the same
  row write as its new ``allow``/``deny``; the chunk leaves the old key, it never changes what
  the old key admits.
- The registry row is written *before* the chunk rows that reference it, and a reader never
  assumes one exists: a chunk whose key is missing from the registry (or whose row does not
  hash to its key) is in nobody's readable set, so it is hidden, never shown.
- Readable sets are cached per (principal-set digest, registry generation). A stale entry can
  only lack keys registered since (the registry only grows, and keys it already holds keep
  their meaning): chunks under a brand-new ACL stay hidden from that caller until the
  generation is re-read (at the next local write, or ``refresh_seconds`` later), never the
  other way round.
- An empty readable set compiles to an always-false clause, never to "no filter".
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from rag.models import Acl, Chunk
from rag.stores.base import checked_principals

if TYPE_CHECKING:
    from rag.config import StoreSettings

ACL_KEY: Final = "acl_key"
"""The column (LanceDB) / keyword field (OpenSearch) holding each chunk's ACL digest."""

RECHECK_SECONDS: Final = 30.0  # how often an index not (yet) fully keyed is re-examined
_DIGESTS: Final = 64  # principal sets whose digest is memoized (sorting 5,000 costs ~3 ms)
RegistryRow = tuple[str, Sequence[str], Sequence[str]]
"""One registry row: the key, the allowed principals, the denied principals."""


def acl_key(acl: Acl) -> str:
    """The key of ``acl``: its content digest (the chunk's ``acl_version``)."""
    return acl.digest()


def registry_rows(acls: Iterable[Acl]) -> dict[str, Acl]:
    """The distinct ACLs of a write, by key (what must be registered before it)."""
    return {acl_key(acl): acl for acl in acls}


def chunk_acls(chunks: Iterable[Chunk]) -> dict[str, Acl]:
    return registry_rows(c.acl for c in chunks)


@dataclass(frozen=True)
class AclKeyOptions:
    """When and how a store filters by ACL keys (from :class:`rag.config.StoreSettings`)."""

    min_principals: int = 64
    cache_size: int = 1024
    refresh_seconds: float = 1.0

    @classmethod
    def of(cls, settings: StoreSettings) -> AclKeyOptions:
        return cls(
            min_principals=settings.acl_ids_min_principals,
            cache_size=settings.acl_ids_cache_size,
            refresh_seconds=settings.acl_ids_refresh_seconds,
        )

    def applies(self, principals: AbstractSet[str]) -> bool:
        """True when a search for ``principals`` should filter by keys (0: always)."""
        return self.min_principals == 0 or len(principals) > self.min_principals


class Registry:
    """A snapshot of the registered ACLs, with an inverted index from allowed principal to
    keys (so resolving a caller costs their principals and the keys they touch, not the
    registry's size)."""

    def __init__(self, rows: Iterable[RegistryRow]) -> None:
        self._acls: dict[str, Acl] = {}
        self._by_allow: dict[str, list[str]] = {}
        for key, allow, deny in rows:
            acl = Acl(allow=frozenset(allow), deny=frozenset(deny))
            if key in self._acls or acl_key(acl) != key:
                continue  # a row that does not hash to its key admits nobody (fail closed)
            self._acls[key] = acl
            for principal in acl.allow:
                self._by_allow.setdefault(principal, []).append(key)

    def __len__(self) -> int:
        return len(self._acls)

    def readable(self, principals: AbstractSet[str]) -> tuple[str, ...]:
        """The sorted keys whose ACL :meth:`~rag.models.Acl.permits` ``principals``."""
        candidates: set[str] = set()
        for principal in principals:
            candidates.update(self._by_allow.get(principal, ()))
        return tuple(sorted(k for k in candidates if self._acls[k].permits(principals)))


def principals_digest(principals: AbstractSet[str]) -> str:
    return hashlib.sha256("\x1f".join(sorted(principals)).encode("utf-8")).hexdigest()


class ReadableKeyCache:
    """The readable keys of recent principal sets, for one registry generation (a bounded
    LRU), and the registry snapshot they were resolved from. See the module docstring for why
    a stale entry only ever hides more."""

    def __init__(self, options: AclKeyOptions) -> None:
        self._options = options
        self._generation: int | None = None
        self._checked_at = 0.0
        self._registry: Registry | None = None
        self._entries: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._digests: OrderedDict[frozenset[str], str] = OrderedDict()

    def invalidate(self) -> None:
        """Re-read the generation before the next lookup (after this process registered)."""
        self._checked_at = 0.0
        self._generation = None

    def _due(self) -> bool:
        return (
            self._generation is None
            or time.monotonic() - self._checked_at >= self._options.refresh_seconds
        )

    def _observe(self, generation: int) -> bool:
        """Record the registry's generation; True if the snapshot must be reloaded."""
        self._checked_at = time.monotonic()
        if generation == self._generation and self._registry is not None:
            return False
        self._generation = generation
        self._entries.clear()
        return True

    def _digest(self, principals: AbstractSet[str]) -> str:
        """The set's digest, memoized by the set itself (equal sets hit, whatever object)."""
        held = frozenset(principals)  # no copy of a frozenset
        digest = self._digests.get(held)
        if digest is None:
            digest = self._digests[held] = principals_digest(held)
            if len(self._digests) > _DIGESTS:
                self._digests.popitem(last=False)
        else:
            self._digests.move_to_end(held)
        return digest

    def _lookup(self, principals: AbstractSet[str]) -> tuple[str, tuple[str, ...] | None]:
        digest = self._digest(principals)
        found = self._entries.get(digest)
        if found is not None:
            self._entries.move_to_end(digest)
        return digest, found

    def _resolve(self, digest: str, principals: AbstractSet[str]) -> tuple[str, ...]:
        assert self._registry is not None
        keys = self._registry.readable(frozenset(checked_principals(principals)))
        self._entries[digest] = keys
        while len(self._entries) > self._options.cache_size:
            self._entries.popitem(last=False)
        return keys

    def _reload(self, rows: Callable[[], Iterable[RegistryRow]]) -> None:
        try:
            self._registry = Registry(rows())
        except BaseException:
            self.invalidate()  # a failed read leaves no generation behind
            raise

    def keys(
        self,
        principals: AbstractSet[str],
        generation: Callable[[], int],
        rows: Callable[[], Iterable[RegistryRow]],
    ) -> tuple[str, ...]:
        """The keys ``principals`` may read (validated on a miss: invalid ones are refused)."""
        if self._due() and self._observe(generation()):
            self._reload(rows)
        digest, found = self._lookup(principals)
        return found if found is not None else self._resolve(digest, principals)

    async def akeys(
        self,
        principals: AbstractSet[str],
        generation: Callable[[], Awaitable[int]],
        rows: Callable[[], Awaitable[list[RegistryRow]]],
    ) -> tuple[str, ...]:
        """:meth:`keys` with an async registry."""
        if self._due() and self._observe(await generation()):
            try:
                self._registry = Registry(await rows())
            except BaseException:
                self.invalidate()  # a failed read leaves no generation behind
                raise
        digest, found = self._lookup(principals)
        return found if found is not None else self._resolve(digest, principals)


class AclKeyState:
    """What one store instance knows about ACL keys: the options, the readable-key cache,
    whether every chunk of its index is keyed, and the keys it knows are registered."""

    def __init__(self, options: AclKeyOptions) -> None:
        self.options = options
        self.cache = ReadableKeyCache(options)
        self._ready: tuple[float, bool] | None = None  # (checked at, every chunk keyed)
        self._registered: set[str] = set()

    def wanted(self, principals: AbstractSet[str]) -> bool:
        return self.options.applies(principals)

    def _known(self) -> bool | None:
        """The kept answer of :meth:`ready`: a yes forever, a no for ``RECHECK_SECONDS``."""
        if self._ready is None:
            return None
        checked_at, ready = self._ready
        return ready if ready or time.monotonic() - checked_at < RECHECK_SECONDS else None

    def ready(self, check: Callable[[], bool]) -> bool:
        """Whether the index may be searched by key (every chunk keyed, a registry there); an
        index written before ACL keys is searched by principals, so nothing appears or
        disappears by surprise."""
        known = self._known()
        if known is None:
            known = check()
            self._ready = (time.monotonic(), known)
        return known

    async def aready(self, check: Callable[[], Awaitable[bool]]) -> bool:
        known = self._known()
        if known is None:
            known = await check()
            self._ready = (time.monotonic(), known)
        return known

    def reset(self) -> None:
        """Examine the index again at the next search (it was just opened or migrated)."""
        self._ready = None

    def unregistered(self, acls: dict[str, Acl]) -> dict[str, Acl]:
        return {k: a for k, a in acls.items() if k not in self._registered}

    def registered(self, keys: Iterable[str]) -> None:
        """``keys`` are in the registry now: this process's readers see them at once."""
        self._registered.update(keys)
        self.cache.invalidate()
