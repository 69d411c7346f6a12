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
        self._settings, self._counts, self._index = settings, counts, index
        self._counted = search_filter(principals, None, filter, keys)
        self._clause = (
            self._counted if fresh is None else search_filter(principals, fresh, filter, keys)
        )
        self._rows: dict[str, int] = {}  # admitted chunks by count key (the index's: its name)
        self._key = ""  # the counted clause's cache key (serialized only if exact is on)

    def missing(self) -> list[Count]:
        """The counts to send (none once cached, or when exact search is off); what the cache
        holds is read here, once."""
        if self._settings.exact_max_rows == 0:
            return []
        self._key = count_key(self._index, self._counted)
        wanted: list[Count] = []
        for key, clause in ((self._key, self._counted), (count_key(self._index, None), None)):
            rows = self._counts.cached(key)
            if rows is None:
                wanted.append((key, {"query": clause or {"match_all": {}}}))
            else:
                self._rows[key] = rows
        return wanted

    def counted(self, key: str, response: dict[str, Any]) -> None:
        self._rows[key] = int(response["count"])
        self._counts.put(key, self._rows[key])

    def body(self, vector: Vectors, k: int) -> dict[str, Any]:
        """Exact when both counts are known and :func:`exact_plan` says so; else the graph."""
        allowed, total = self._rows.get(self._key), self._rows.get(count_key(self._index, None))
        limit = self._settings.exact_max_rows
        exact = allowed is not None and total is not None and exact_plan(allowed, total, limit)
        return dense_query(vector.tolist(), self._clause, k, self._settings.ef_search, exact=exact)
