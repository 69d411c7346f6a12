"""The OpenSearch stores' k-NN plan: exact search over the chunks a search filter admits, or
the HNSW graph (:func:`rag.stores.opensearch_dsl.exact_plan`), from cached counts. Pure: the
sync and async stores send the counts it asks for and build the body it returns."""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import Any

from rag.config import OpenSearchSettings
from rag.embeddings.base import Vectors
from rag.filters import Filter
from rag.stores.counts import CountCache
from rag.stores.opensearch_dsl import (
    Fresh,
    Keys,
    count_key,
    dense_query,
    exact_plan,
    search_filter,
)

Count = tuple[str, dict[str, Any]]  # (cache key, count request body)


class DensePlan:
    """One k-NN search's plan. The counted clause is the filter without the freshness bound
    (its count is reusable for 60 s); the query carries the whole filter either way, so a stale
    count can only cost speed, never admit a chunk."""

    def __init__(
        self,
        settings: OpenSearchSettings,
        counts: CountCache,
        index: str,
        principals: AbstractSet[str],
        fresh: Fresh | None,
        filter: Filter | None,
        keys: Keys,
    ) -> None:
        self._settings, self._counts = settings, counts
        self._counted = search_filter(principals, None, filter, keys)
        self._clause = (
            self._counted if fresh is None else search_filter(principals, fresh, filter, keys)
        )
        self._keys = (count_key(index, self._counted), count_key(index, None))

    def missing(self) -> list[Count]:
        """The counts to send (none once cached, or when exact search is off)."""
        if self._settings.exact_max_rows == 0:
            return []
        clauses: tuple[dict[str, Any], ...] = (self._counted, {"match_all": {}})
        return [
            (key, {"query": clause})
            for key, clause in zip(self._keys, clauses, strict=True)
            if self._counts.cached(key) is None
        ]

    def counted(self, key: str, response: dict[str, Any]) -> None:
        self._counts.put(key, int(response["count"]))

    def body(self, vector: Vectors, k: int) -> dict[str, Any]:
        limit = self._settings.exact_max_rows
        allowed, total = (self._counts.cached(key) for key in self._keys)
        exact = allowed is not None and total is not None and exact_plan(allowed, total, limit)
        return dense_query(vector.tolist(), self._clause, k, self._settings.ef_search, exact=exact)
