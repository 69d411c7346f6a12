"""The OpenSearch search plan: when a k-NN search scores every admitted chunk exactly, and
that both query shapes carry the whole search filter."""

from __future__ import annotations

import pytest

from rag.stores.counts import CountCache
from rag.stores.opensearch_dsl import (
    EXACT_MAX_SHARE,
    count_key,
    dense_query,
    exact_plan,
    search_filter,
)


@pytest.mark.parametrize(
    ("allowed", "total", "max_rows", "exact"),
    [
        (100_000, 1_000_000, 150_000, True),  # 10%: exact (the graph pays twice there)
        (500_000, 1_000_000, 150_000, False),  # broad: the graph
        (200_000, 1_000_000, 150_000, False),  # narrow enough, but over max_rows
        (30, 100, 150_000, False),  # 30% of a small index: the graph
        (20, 100, 150_000, True),  # at the share bound
        (0, 0, 150_000, True),  # an empty index or a user who may read nothing
        (10, 1_000_000, 0, False),  # 0 turns exact search off
    ],
)
def test_exact_plan(allowed: int, total: int, max_rows: int, exact: bool) -> None:
    assert exact_plan(allowed, total, max_rows) is exact
    assert EXACT_MAX_SHARE == 0.2


def test_both_shapes_carry_the_whole_filter() -> None:
    clause = search_filter(frozenset({"group:a", "user:o'brien"}))
    graph = dense_query([0.0, 1.0], clause, 5, 100, exact=False)
    exact = dense_query([0.0, 1.0], clause, 5, 100, exact=True)
    assert graph["query"]["knn"]["vector"] == {"vector": [0.0, 1.0], "k": 100, "filter": clause}
    script_score = exact["query"]["script_score"]
    assert script_score["query"] == {"bool": {"filter": clause}}
    assert script_score["script"]["params"] == {
        "field": "vector",
        "query_value": [0.0, 1.0],
        "space_type": "cosinesimil",
    }
    assert graph["size"] == exact["size"] == 5
    assert graph["_source"] == exact["_source"]


def test_counts_are_cached_per_index_and_clause() -> None:
    now = [0.0]
    cache = CountCache(ttl=60.0, size=8, clock=lambda: now[0])
    clause = search_filter(frozenset({"group:a"}))
    a, b = count_key("idx-a", clause), count_key("idx-b", clause)
    assert a != b != count_key("idx-a", None)
    assert cache.cached(a) is None
    cache.put(a, 7)
    assert cache.cached(a) == 7
    assert cache.cached(b) is None
    now[0] = 61.0
    assert cache.cached(a) is None


def test_a_plan_asks_for_its_counts_once_then_reads_the_cache() -> None:
    import numpy as np

    from rag.config import OpenSearchSettings
    from rag.stores.opensearch_plan import DensePlan

    counts = CountCache()
    settings = OpenSearchSettings(exact_max_rows=150_000)
    principals = frozenset({"group:a"})

    def plan(s: OpenSearchSettings = settings) -> DensePlan:
        return DensePlan(s, counts, "idx", principals, None, None, None)

    first = plan()
    missing = first.missing()
    assert [body for _, body in missing] == [
        {"query": search_filter(principals)},
        {"query": {"match_all": {}}},
    ]
    assert "knn" in first.body(np.zeros(2, dtype=np.float32), 5)["query"]  # uncounted: graph
    for (key, _), rows in zip(missing, (10, 1_000), strict=True):
        first.counted(key, {"count": rows})
    second = plan()
    assert second.missing() == []
    assert "script_score" in second.body(np.zeros(2, dtype=np.float32), 5)["query"]
    off = plan(OpenSearchSettings(exact_max_rows=0))
    assert off.missing() == []
    assert "knn" in off.body(np.zeros(2, dtype=np.float32), 5)["query"]
