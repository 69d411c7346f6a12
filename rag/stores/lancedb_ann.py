"""How the embedded store searches vectors under an ACL.

The ANN index is IVF_SQ (8-bit scalar-quantized vectors in ``sqrt(rows)`` k-means partitions,
re-scored exactly by ``refine_factor``). LanceDB applies an ACL prefilter as a row mask, and
its cost follows the rows it is checked against: inside one HNSW graph over every row (the
former IVF_HNSW_SQ, one partition at a million rows) that was every row on every query, a fixed
~30 ms that made every filtered query 2.9-4.1x an unfiltered one; in flat IVF partitions it is
only the probed partitions' rows (``python -m bench million``, see the README).

Per query, from how many chunks the ACL clause admits (a count the ACL scalar indexes answer in
about a millisecond, no rows read):

- at most ``exact_max_rows``: exact search over exactly those rows (no index): at one million
  chunks 1,000 allowed rows take ~25 ms and score every allowed vector;
- otherwise ``nprobes`` partitions for an ACL admitting at least 10% of the table, and more
  (``x sqrt(0.1 / share)``, up to all of them) for a narrower one: a probed partition holds
  fewer allowed rows the narrower the ACL, so the nearest allowed rows lie in more of them.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

INDEX_TYPE: Final = "IVF_SQ"
INDEX_KIND: Final = "IvfSq"  # how LanceDB's list_indices() names it
COUNT_TTL_SECONDS: Final = 60.0
COUNT_CACHE_SIZE: Final = 1024
BROAD_SHARE: Final = 0.1  # an ACL admitting at least this share of rows probes ``nprobes``


def partitions(rows: int) -> int:
    """IVF partitions for a table of ``rows``: sqrt(rows) (1,000 at a million)."""
    return max(1, round(math.sqrt(rows)))


@dataclass(frozen=True)
class AnnPlan:
    """Exact search (no index), or the IVF partitions to probe."""

    exact: bool
    nprobes: int


def plan(allowed: int, total: int, nprobes: int, exact_max_rows: int) -> AnnPlan:
    """The search for an ACL admitting ``allowed`` of ``total`` rows. Pure."""
    if allowed <= exact_max_rows:
        return AnnPlan(exact=True, nprobes=nprobes)
    share = allowed / max(total, allowed, 1)
    if share >= BROAD_SHARE:
        return AnnPlan(exact=False, nprobes=nprobes)
    boost = math.sqrt(BROAD_SHARE / share)
    # LanceDB caps probes at the index's partitions; the bound only keeps the number sane (the
    # index was sized for the rows at build time, possibly 16x fewer or more than now)
    return AnnPlan(exact=False, nprobes=min(math.ceil(nprobes * boost), partitions(total) * 4))


class CountCache:
    """Row counts per clause (``None``: all rows), reused for ``ttl`` seconds.

    A plan only decides speed: every search applies its whole clause, so a count up to ``ttl``
    old can cost a slower or less exhaustive search, never a row the caller may not read. It
    saves the count on every query, which for a user's thousands of readable ACL keys is most of
    the filter's cost (~24 ms for 2,690 keys at 1M chunks, against ~1 ms for a few principals).
    """

    def __init__(
        self,
        ttl: float = COUNT_TTL_SECONDS,
        size: int = COUNT_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl, self._size, self._clock = ttl, size, clock
        self._entries: OrderedDict[bytes, tuple[float, int]] = OrderedDict()
        self._lock = threading.Lock()

    def count(self, clause: str | None, count: Callable[[str | None], int]) -> int:
        """``count(clause)``, cached."""
        key = b"" if clause is None else hashlib.blake2b(clause.encode(), digest_size=16).digest()
        now = self._clock()
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and now - hit[0] < self._ttl:
                self._entries.move_to_end(key)
                return hit[1]
        rows = count(clause)
        with self._lock:
            self._entries[key] = (now, rows)
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return rows
