"""Issue 16 §2: users in thousands of groups, on the indexes ``python -m bench million`` built
(or that ``--build`` loads here).

A user in N groups (10, 1,000, 5,000) of which only a few match any chunk (the rest are groups
that own nothing in this corpus, as most of a big-company user's groups do):

- narrow: 5 team groups match (0.5% of the corpus);
- broad: the 10% group and 4 teams match (~10.4%), and that 10% group appears in thousands of
  distinct ACLs (the hard case for ACL keys).

Per store, per N, the store's own ``search`` three ways, measured interleaved query by query:
(1) ``principals``: every principal in the filter (allow terms and deny terms), the path before
ACL keys (``acl_ids_min_principals`` out of reach); (2) ``acl_key, default``: the product
setting (``acl_ids_min_principals`` = 64: principals for the 10-group user, ACL keys above);
(3) ``acl_key, always`` (0: keys for every user). On the key path the store resolves the user's
readable ACL keys from its ACL registry (exactly ``Acl.permits``), caches them per (principal
set, registry generation), and filters on ``acl_key`` (see :mod:`rag.stores.acl_keys`).
Every hit is checked with ``Acl.permits`` (violations must be 0) and recall@10 is against the
exact top-10 over the allowed rows. The ratio is against the default path at 10 groups.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    BASE,
    SHARES,
    TEAMS,
    Corpus,
    K,
    label,
    measure_all,
    opensearch_node,
    team,
)
from bench.common import corpus as make_corpus
from rag.config import StoreSettings
from rag.identity import UserContext
from rag.models import Acl, SearchHit
from rag.stores.acl_keys import ACL_KEY, AclKeyOptions
from rag.stores.lancedb import LanceDBStore
from rag.stores.opensearch import OpenSearchStore

MATCHED_TEAMS = (3, 141, 592, 653, 589)
NEVER = 10**9
VARIANTS = {"principals": NEVER, "acl_key, default": 64, "acl_key, always": 0}
DEFAULT = "acl_key, default"


def acl_table(corpus: Corpus) -> dict[int, Acl]:
    """The distinct ACLs of the corpus by id (what the store's registry holds, by key)."""
    table: dict[int, Acl] = {}
    for level in range(1, len(SHARES) + 1):
        labels = {label(s) for s in SHARES[:level]}
        for t in range(TEAMS):
            table[(level - 1) * TEAMS + t] = Acl(allow=frozenset({*labels, team(t)}))
    return table


def user(kind: str, groups: int) -> tuple[UserContext, np.ndarray, Callable[[Corpus], Any]]:
    """The user, and the mask of rows they may read."""
    teams = MATCHED_TEAMS if kind == "narrow" else MATCHED_TEAMS[:4]
    matched = [f"t{t}" for t in teams] + ([] if kind == "narrow" else ["p0_1"])
    unmatched = [f"dept-{j:05d}" for j in range(groups - len(matched))]
    context = UserContext.of("alice", matched + unmatched)

    def mask(corpus: Corpus) -> np.ndarray:
        rows = np.isin(corpus.teams, teams)
        return rows if kind == "narrow" else rows | (corpus.u < 0.1)

    return context, np.array(teams), mask


class Checked:
    """Counts hits outside the user's ACL (the retriever would refuse the answer)."""

    def __init__(self) -> None:
        self.violations = 0

    def searcher(self, store: Any, principals: frozenset[str]) -> Callable[[np.ndarray], list[str]]:
        def search(q: np.ndarray) -> list[str]:
            hits: list[SearchHit] = store.search(q, principals, K)
            self.violations += sum(not h.chunk.acl.permits(principals) for h in hits)
            return [h.chunk.id for h in hits]

        return search


def lancedb_stores(path: Path, index_type: str | None) -> dict[str, LanceDBStore]:
    """One store per variant on the same table; with ``index_type``, the ``acl_key`` scalar
    index is rebuilt as that (BITMAP or BTREE) first."""
    stores = {
        name: LanceDBStore(path, StoreSettings(acl_ids_min_principals=m))
        for name, m in VARIANTS.items()
    }
    table = stores["principals"]._open_for_read()
    if index_type is not None:
        start = time.perf_counter()
        table.create_scalar_index(ACL_KEY, index_type=index_type, replace=True)
        print(
            f"LanceDB: {index_type} index on acl_key built in {time.perf_counter() - start:.1f} s"
        )
    kinds = [i.index_type for i in table.list_indices() if ACL_KEY in i.columns]
    print(f"LanceDB acl_key index: {kinds or 'none'}")
    return stores


def opensearch_stores(url: str) -> dict[str, OpenSearchStore]:
    from bench.opensearch_acl import settings_for

    return {
        name: OpenSearchStore(settings_for(url), acl_keys=AclKeyOptions(min_principals=m))
        for name, m in VARIANTS.items()
    }


def resolve_ms(store: Any, principals: frozenset[str]) -> tuple[float, int]:
    """A cold resolution of the user's readable keys (registry read included): ms, keys. -1
    keys: the store searches by principals (not keyed)."""
    keys: tuple[str, ...] | None
    if isinstance(store, LanceDBStore):
        lance = LanceDBStore(store._uri, store._settings)
        table = lance._open_for_read()
        if not lance._acls.keyed(table, lance._table_names):
            return 0.0, -1
        start = time.perf_counter()
        keys = lance._acls.readable(principals)
    else:
        os_store = OpenSearchStore(store._settings, acl_keys=AclKeyOptions(min_principals=0))
        index = os_store._read_target()
        start = time.perf_counter()
        found = os_store._keys(index, principals)
        keys = None if found is None else tuple(found)
    elapsed = (time.perf_counter() - start) * 1000
    return elapsed, -1 if keys is None else len(keys)


Result = tuple[str, int, int, Any, float, int]


def _measure_store(
    corpus: Corpus,
    truth: list[set[str]],
    stores: dict[str, Any],
    kind: str,
    sizes: list[int],
) -> list[Result]:
    """Each (variant, group count)'s row: (name, groups, terms, Row, resolve ms, leaks), all
    measured interleaved query by query."""
    configs = {}
    checks: dict[tuple[str, int], Checked] = {}
    terms: dict[tuple[str, int], tuple[int, float]] = {}
    for groups in sizes:
        principals = user(kind, groups)[0].principals()
        for name, store in stores.items():
            keyed = AclKeyOptions(min_principals=VARIANTS[name]).applies(principals)
            ms, keys = resolve_ms(store, principals) if keyed else (0.0, -1)
            terms[name, groups] = (len(principals) if keys < 0 else keys, ms)
            check = checks[name, groups] = Checked()
            search = check.searcher(store, principals)
            for q in corpus.queries[:5]:  # warm-up (and the key cache)
                search(q)
            check.violations = 0
            configs[f"{name}/{groups}"] = (truth, search)
    rows = measure_all(corpus, configs)
    return [
        (name, groups, *terms[name, groups][:1], rows[f"{name}/{groups}"], terms[name, groups][1],
         checks[name, groups].violations)
        for groups in sizes
        for name in stores
    ]  # fmt: skip


def _print(rows: list[Result]) -> None:
    print(
        f"{'variant':<20}{'groups':>7}{'terms':>7}{'recall@10':>10}{'p50 ms':>9}{'p95 ms':>9}"
        f"{'vs 10 (default)':>16}{'resolve ms':>11}{'leaks':>6}"
    )
    base = next(r[3].p95 for r in rows if r[0] == DEFAULT and r[1] == min(x[1] for x in rows))
    for name, groups, terms, row, resolve_ms, leaks in sorted(rows, key=lambda r: (r[0], r[1])):
        print(
            f"{name:<20}{groups:>7,}{terms:>7,}{row.recall:>10.4f}{row.p50:>9.2f}{row.p95:>9.2f}"
            f"{row.p95 / base:>16.2f}{resolve_ms:>11.2f}{leaks:>6}",
            flush=True,
        )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench groups --")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--data", choices=["scifact", "gaussian"], default="scifact")
    parser.add_argument("--base", type=int, default=BASE)
    parser.add_argument("--groups", default="10,1000,5000")
    parser.add_argument("--kinds", default="narrow,broad")
    parser.add_argument("--lancedb", type=Path, help="the table python -m bench million kept")
    parser.add_argument("--port", type=int, help="the node python -m bench million kept")
    parser.add_argument(
        "--build", action="store_true", help="load the corpus first where the store is empty"
    )
    parser.add_argument("--segments", type=int, default=1, help="OpenSearch force merge (--build)")
    parser.add_argument(
        "--acl-index", choices=["BITMAP", "BTREE"], help="rebuild LanceDB's acl_key index as"
    )
    args = parser.parse_args(argv)
    corpus = make_corpus(args.data, args.rows, args.queries, args.base)
    acls = acl_table(corpus)
    assert all(acls[int(i)] == corpus.acl_of(j) for j, i in enumerate(corpus.acl_ids[:1000]))
    sizes = [int(g) for g in args.groups.split(",")]
    print(
        f"== users in many groups: {args.rows:,} chunks ({corpus.description}), "
        f"{len(acls):,} distinct ACLs, {args.queries} queries per row, k={K}"
    )
    stores: list[tuple[str, dict[str, Any]]] = []
    if args.lancedb:
        if args.build:
            from bench import store_acl

            store_acl.load(args.lancedb, corpus, StoreSettings())
        stores.append(("LanceDB", lancedb_stores(args.lancedb, args.acl_index)))
    node = opensearch_node(port=args.port, keep=True) if args.port else None
    if node is not None:
        url = node.__enter__()
        if args.build:
            from bench import opensearch_acl

            opensearch_acl.load(url, corpus, args.segments)
        stores.append(("OpenSearch", opensearch_stores(url)))
    for kind in args.kinds.split(","):
        mask = user(kind, sizes[0])[2](corpus)
        truth = corpus.truth(("user", kind), mask)
        print(f"\n-- {kind} user: may read {mask.mean():.2%} of the chunks")
        for name, variants in stores:
            print(f"\n{name}")
            _print(_measure_store(corpus, truth, variants, kind, sizes))
    if node is not None:
        node.__exit__(None, None, None)
    print(
        "\nterms: principals sent (principal path) or readable ACL keys (acl_key path); "
        "resolve ms: a cold resolution of the readable keys (registry read + resolve; once per "
        "principal set and registry generation, then cached: not in the search latency); "
        "leaks: hits outside the user's ACL; vs 10: p95 over the default path's at 10 groups"
    )
