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

import math
from dataclasses import dataclass
from typing import Final

INDEX_TYPE: Final = "IVF_SQ"
INDEX_KIND: Final = "IvfSq"  # how LanceDB's list_indices() names it
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
