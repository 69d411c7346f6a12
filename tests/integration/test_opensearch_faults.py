from __future__ import annotations

import numpy as np
import pytest

from rag.errors import StoreError
from rag.stores.opensearch import OpenSearchStore
from tests.contract import EMBEDDER, INFO, make_chunk
from tests.integration.fault_proxy import FaultProxy, Faults
from tests.opensearch_node import drop, os_settings

pytestmark = pytest.mark.integration

CHUNKS = [make_chunk(f"doc{i // 4}", i % 4, f"chunk {i} text", {"group:all"}) for i in range(2000)]


def _vectors(n: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    v = rng.normal(size=(n, EMBEDDER.dimension)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_a_fifth_of_items_throttled_loses_and_duplicates_nothing(opensearch_url: str) -> None:
    with FaultProxy(opensearch_url, Faults(reject_share=0.2, seed=1)) as proxy:
        settings = os_settings(proxy.url, bulk_batch=200, refresh="false")
        store = OpenSearchStore(settings)
        store.ensure_index(INFO)
        store.upsert(CHUNKS, _vectors(len(CHUNKS)))
        store.upsert(CHUNKS, _vectors(len(CHUNKS)))  # a re-run must not duplicate
        store.optimize()
        assert proxy.faults.rejected > 300
        assert store.chunk_ids() == {c.id for c in CHUNKS}
        assert store.count() == len(CHUNKS)
        assert store.dead_letters == []
        drop(store, settings.alias)


def test_exhausted_retry_budget_fails_loudly(opensearch_url: str) -> None:
    with FaultProxy(opensearch_url, Faults(reject_share=1.0)) as proxy:
        settings = os_settings(proxy.url, max_retries=2)
        store = OpenSearchStore(settings)
        store.ensure_index(INFO)
        with pytest.raises(StoreError, match="retry budget"):
            store.upsert(CHUNKS[:10], _vectors(10))
        drop(store, settings.alias)


def test_non_retryable_items_go_to_dead_letters(opensearch_url: str) -> None:
    fatal = {CHUNKS[5].id, CHUNKS[17].id}
    with FaultProxy(opensearch_url, Faults(fatal_ids=fatal)) as proxy:
        settings = os_settings(proxy.url)
        store = OpenSearchStore(settings)
        store.ensure_index(INFO)
        store.upsert(CHUNKS[:40], _vectors(40))
        assert {d.chunk_id for d in store.dead_letters} == fatal
        assert all(d.status == 400 for d in store.dead_letters)
        assert store.chunk_ids() == {c.id for c in CHUNKS[:40]} - fatal
        drop(store, settings.alias)
