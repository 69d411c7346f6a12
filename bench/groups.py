"""Issue 16 §2: users in thousands of groups, on the indexes ``python -m bench million`` built.

A user in N groups (10, 1,000, 5,000) of which only a few match any chunk (the rest are groups
that own nothing in this corpus, as most of a big-company user's groups do):

- narrow: 5 team groups match (0.5% of the corpus);
- broad: the 10% group and 4 teams match (~10.4%), and that 10% group appears in thousands of
  distinct ACLs (the hard case for ACL ids).

Per store, per N: (1) the current path, the store's own ``search`` with every principal in the
filter (allow terms and deny terms); (2) the compact-ACL-id prototype: each distinct ACL has an
id (here: ``acl_id`` in the chunk metadata; LanceDB: materialised as an int column with a
BITMAP index, OpenSearch: the ``meta_num`` keyword tokens), the user's readable ids are computed
once from the distinct-ACL table (allow meets the principals, deny does not: exactly
``Acl.permits``) and cached per (user, ACL version), and the search filters on those ids only;
(3) OpenSearch only: a terms lookup (the principals stored in a document, fetched by the node).
Every hit is checked with ``Acl.permits`` (violations must be 0) and recall@10 is against the
exact top-10 over the allowed rows. Baseline: the same variant at 10 groups, same run.
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
from rag.stores.lancedb import _RESULT_COLUMNS, LanceDBStore, _chunk
from rag.stores.opensearch import OpenSearchStore
from rag.stores.opensearch_async import hits_of
from rag.stores.opensearch_dsl import SOURCE_EXCLUDES, num_token

MATCHED_TEAMS = (3, 141, 592, 653, 589)
LOOKUP_INDEX = "bench-principals"


def acl_table(corpus: Corpus) -> dict[int, Acl]:
    """The distinct ACLs of the corpus by id (what a store would keep beside the chunks)."""
    table: dict[int, Acl] = {}
    for level in range(1, len(SHARES) + 1):
        labels = {label(s) for s in SHARES[:level]}
        for t in range(TEAMS):
            table[(level - 1) * TEAMS + t] = Acl(allow=frozenset({*labels, team(t)}))
    return table


def readable(acls: dict[int, Acl], principals: frozenset[str]) -> list[int]:
    return sorted(i for i, acl in acls.items() if acl.permits(principals))


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

    def ids(self, hits: list[SearchHit], principals: frozenset[str]) -> list[str]:
        self.violations += sum(not h.chunk.acl.permits(principals) for h in hits)
        return [h.chunk.id for h in hits]

    def searcher(
        self, fn: Callable[..., list[SearchHit]], principals: frozenset[str], arg: Any
    ) -> Callable[[np.ndarray], list[str]]:
        def search(q: np.ndarray) -> list[str]:
            return self.ids(fn(q, principals, arg), principals)

        return search


def lancedb_variants(
    path: Path, acl_column: bool
) -> tuple[LanceDBStore, Callable[[np.ndarray, frozenset[str], list[int]], list[SearchHit]]]:
    settings = StoreSettings()
    store = LanceDBStore(path, settings)
    table = store._require_table()
    if acl_column and "acl_id" not in table.schema.names:
        start = time.perf_counter()
        table.add_columns({"acl_id": "CAST(json_get_float(meta_num, 'acl_id') AS BIGINT)"})
        table.create_scalar_index("acl_id", index_type="BITMAP", replace=True)
        print(f"LanceDB: acl_id column + BITMAP index added in {time.perf_counter() - start:.1f} s")
    columns = [*_RESULT_COLUMNS, "acl_checked_ms", "_distance"]

    def by_acl_id(q: np.ndarray, principals: frozenset[str], ids: list[int]) -> list[SearchHit]:
        where = f"acl_id IN ({', '.join(map(str, ids))})" if ids else "false"
        query = (
            table.search(q, vector_column_name="vector")
            .distance_type("cosine")
            .where(where, prefilter=True)
            .select(columns)
            .limit(K)
            .nprobes(settings.nprobes)
            .refine_factor(settings.refine_factor)
        )
        rows = query.to_arrow().to_pylist()
        return [SearchHit(chunk=_chunk(r), score=1.0 - float(r["_distance"])) for r in rows]

    return store, by_acl_id


def opensearch_variants(
    url: str,
) -> tuple[OpenSearchStore, Callable[..., list[SearchHit]], Callable[..., list[SearchHit]]]:
    from bench.opensearch_acl import settings_for

    settings = settings_for(url)
    store = OpenSearchStore(settings)
    index = store._target()
    client = store.client
    if not client.indices.exists(index=LOOKUP_INDEX):
        client.indices.create(
            index=LOOKUP_INDEX,
            body={"mappings": {"properties": {"principals": {"type": "keyword"}}}},
        )

    def knn(q: np.ndarray, acl: dict[str, Any]) -> list[SearchHit]:
        body = {
            "size": K,
            "_source": {"excludes": SOURCE_EXCLUDES},
            "query": {
                "knn": {
                    "vector": {
                        "vector": [float(x) for x in q],
                        "k": max(K, settings.ef_search),
                        "filter": acl,
                    }
                }
            },
        }
        return hits_of(client.search(index=index, body=body), dense=True)

    def by_acl_id(q: np.ndarray, principals: frozenset[str], ids: list[int]) -> list[SearchHit]:
        tokens = [num_token("acl_id", float(i)) for i in ids]
        return knn(q, {"terms": {"meta_num": tokens}})

    def by_lookup(q: np.ndarray, principals: frozenset[str], doc: str) -> list[SearchHit]:
        lookup = {"index": LOOKUP_INDEX, "id": doc, "path": "principals"}
        acl = {
            "bool": {
                "filter": [{"terms": {"acl_allow": lookup}}],
                "must_not": [{"terms": {"acl_deny": lookup}}],
            }
        }
        return knn(q, acl)

    return store, by_acl_id, by_lookup


CURRENT = "store.search (current)"
Result = tuple[str, int, int, Any, float, int]


def _measure_store(
    corpus: Corpus,
    truth: list[set[str]],
    acls: dict[int, Acl],
    store: Any,
    variants: dict[str, Callable[..., list[SearchHit]]],
    kind: str,
    sizes: list[int],
) -> list[Result]:
    """Each (variant, group count)'s row: (name, groups, terms, Row, resolve ms, leaks), all
    measured interleaved query by query."""
    calls: dict[tuple[str, int], tuple[Callable[..., list[SearchHit]], Any, int, float]] = {}
    principals_of: dict[int, frozenset[str]] = {}
    for groups in sizes:
        principals = principals_of[groups] = user(kind, groups)[0].principals()
        start = time.perf_counter()
        ids = readable(acls, principals)
        resolve = (time.perf_counter() - start) * 1000

        def current(q: np.ndarray, p: frozenset[str], _: Any) -> list[SearchHit]:
            hits: list[SearchHit] = store.search(q, p, K)
            return hits

        calls[CURRENT, groups] = (current, None, len(principals), 0.0)
        for name, fn in variants.items():
            if name == "terms lookup":
                doc = f"{kind}-{groups}"
                body = {"principals": sorted(principals)}
                store.client.index(index=LOOKUP_INDEX, id=doc, body=body, refresh="true")
                calls[name, groups] = (fn, doc, len(principals), 0.0)
            else:
                calls[name, groups] = (fn, ids, len(ids), resolve)
    checks = {key: Checked() for key in calls}
    configs = {}
    for key, (fn, arg, _, _) in calls.items():
        principals = principals_of[key[1]]
        for q in corpus.queries[:5]:  # warm-up
            fn(q, principals, arg)
        configs[f"{key[0]}/{key[1]}"] = (truth, checks[key].searcher(fn, principals, arg))
    rows = measure_all(corpus, configs)
    return [
        (name, groups, terms, rows[f"{name}/{groups}"], resolve, checks[name, groups].violations)
        for (name, groups), (_, _, terms, resolve) in calls.items()
    ]


def _print(rows: list[Result]) -> None:
    print(
        f"{'variant':<30}{'groups':>7}{'terms':>7}{'recall@10':>10}{'p50 ms':>9}{'p95 ms':>9}"
        f"{'p95 vs 10':>10}{'resolve ms':>11}{'leaks':>6}"
    )
    base: dict[str, float] = {}
    for name, groups, terms, row, resolve_ms, leaks in rows:
        base.setdefault(name, row.p95)
        print(
            f"{name:<30}{groups:>7,}{terms:>7,}{row.recall:>10.4f}{row.p50:>9.2f}{row.p95:>9.2f}"
            f"{row.p95 / base[name]:>10.2f}{resolve_ms:>11.2f}{leaks:>6}",
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
    args = parser.parse_args(argv)
    corpus = make_corpus(args.data, args.rows, args.queries, args.base)
    acls = acl_table(corpus)
    assert all(acls[int(i)] == corpus.acl_of(j) for j, i in enumerate(corpus.acl_ids[:1000]))
    sizes = [int(g) for g in args.groups.split(",")]
    print(
        f"== users in many groups: {args.rows:,} chunks ({corpus.description}), "
        f"{len(acls):,} distinct ACLs, {args.queries} queries per row, k={K}"
    )
    stores: list[tuple[str, Any, dict[str, Callable[..., list[SearchHit]]]]] = []
    if args.lancedb:
        store, by_id = lancedb_variants(args.lancedb, acl_column=True)
        stores.append(("LanceDB", store, {"acl_id IN (...) [prototype]": by_id}))
    node = opensearch_node(port=args.port, keep=True) if args.port else None
    if node is not None:
        os_store, by_id, by_lookup = opensearch_variants(node.__enter__())
        variants = {"terms lookup": by_lookup, "acl_id terms [prototype]": by_id}
        stores.append(("OpenSearch", os_store, variants))
    for kind in args.kinds.split(","):
        mask = user(kind, sizes[0])[2](corpus)
        truth = corpus.truth(("user", kind), mask)
        print(f"\n-- {kind} user: may read {mask.mean():.2%} of the chunks")
        for name, store, variants in stores:
            print(f"\n{name}")
            rows = _measure_store(corpus, truth, acls, store, variants, kind, sizes)
            _print(sorted(rows, key=lambda r: (r[0] != CURRENT, r[0])))
    if node is not None:
        node.__exit__(None, None, None)
    print(
        "\nterms: principals sent (current, lookup) or readable ACL ids (prototype); resolve ms: "
        "computing the readable ids from the distinct-ACL table (once per user and ACL version, "
        "then cached; not in the search latency); leaks: hits outside the user's ACL"
    )
