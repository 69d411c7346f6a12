from __future__ import annotations

import numpy as np
import pytest

from rag.errors import StoreError
from rag.models import Acl
from rag.stores.opensearch import OpenSearchStore
from rag.stores.opensearch_acls import read_registry, registry_name
from tests.contract import EMBEDDER, INFO, make_chunk
from tests.integration.fault_proxy import FaultProxy, Faults
from tests.opensearch_node import drop, os_settings

pytestmark = pytest.mark.integration

CHUNKS = [make_chunk(f"doc{i // 4}", i % 4, f"chunk {i} text", {"group:all"}) for i in range(2000)]
IDS = {c.id for c in CHUNKS}


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
        faults = proxy.faults
        assert faults.rejected > 300
        # each item reached the node exactly once per upsert; only rejected ones were resent
        assert set(faults.applied) == IDS
        assert set(faults.applied.values()) == {2}
        assert faults.sent.total() == 2 * len(CHUNKS) + faults.rejected
        assert store.chunk_ids() == IDS
        assert store.count() == len(CHUNKS)
        assert store.dead_letters == []
        drop(store, settings.alias)


def test_unavailable_items_and_failed_requests_are_retried_without_loss(
    opensearch_url: str,
) -> None:
    fatal = {CHUNKS[5].id, CHUNKS[1234].id}
    faults = Faults(
        reject_share=0.05,
        unavailable_share=0.05,  # 503 items
        failed_share=0.05,  # 502 requests, not forwarded
        lost_share=0.05,  # forwarded, then 504: applied, and sent again
        fatal_ids=fatal,
        seed=2,
    )
    with FaultProxy(opensearch_url, faults) as proxy:
        settings = os_settings(proxy.url, bulk_batch=100, refresh="false")
        store = OpenSearchStore(settings)
        store.ensure_index(INFO)
        store.upsert(CHUNKS, _vectors(len(CHUNKS)))
        store.upsert(CHUNKS, _vectors(len(CHUNKS)))
        assert store.update_acl("doc3", Acl(allow=frozenset({"group:hr"}))) == 4
        store.delete_document("doc2")
        store.optimize()
        assert faults.rejected > 100
        assert faults.failed_requests > 0
        assert faults.lost_responses > 0
        assert set(faults.applied) == IDS - fatal
        kept = IDS - fatal - {c.id for c in CHUNKS[8:12]}
        assert store.chunk_ids() == kept
        assert store.count() == len(kept)
        updated = store.client.get(index=settings.alias, id=CHUNKS[12].id)["_source"]
        assert updated["acl_allow"] == ["group:hr"]
        # the fatal ids once per upsert, each with the right document
        assert sorted((d.chunk_id, d.document_id, d.status) for d in store.dead_letters) == sorted(
            [(c.id, c.document_id, 400) for c in CHUNKS if c.id in fatal] * 2
        )
        drop(store, settings.alias)


@pytest.mark.parametrize(
    "faults",
    [Faults(reject_share=1.0), Faults(unavailable_share=1.0), Faults(failed_share=1.0)],
    ids=["429-items", "503-items", "502-requests"],
)
def test_exhausted_retry_budget_fails_loudly(opensearch_url: str, faults: Faults) -> None:
    with FaultProxy(opensearch_url, faults) as proxy:
        settings = os_settings(proxy.url, max_retries=2)
        store = OpenSearchStore(settings)
        store.ensure_index(INFO)
        with pytest.raises(StoreError, match="retry budget"):
            store.upsert(CHUNKS[:10], _vectors(10))
        # one budget for every temporary failure: the first try and two retries
        assert faults.sent == {c.id: 3 for c in CHUNKS[:10]}
        drop(store, settings.alias)


def test_a_request_refused_for_good_fails_at_once(opensearch_url: str) -> None:
    faults = Faults(failed_share=1.0, failed_status=413)
    with FaultProxy(opensearch_url, faults) as proxy:
        settings = os_settings(proxy.url)
        store = OpenSearchStore(settings)
        store.ensure_index(INFO)
        with pytest.raises(StoreError, match="bulk failed") as raised:
            store.upsert(CHUNKS[:10], _vectors(10))
        assert raised.value.__cause__ is not None
        assert faults.sent == {c.id: 1 for c in CHUNKS[:10]}
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


def test_acl_registry_writes_are_retried_like_chunk_writes(opensearch_url: str) -> None:
    """Rejected, unavailable and failed registry writes are resent with the chunks' budget:
    every chunk ends up keyed and readable through its key (not hidden by a lost registry
    row)."""
    chunks = [make_chunk(f"doc{i}", 0, f"chunk {i} text", {f"group:g{i % 7}"}) for i in range(70)]
    faults = Faults(
        reject_share=0.3, unavailable_share=0.1, failed_share=0.2, registry=True, seed=5
    )
    with FaultProxy(opensearch_url, faults) as proxy:
        settings = os_settings(proxy.url, refresh="true")
        store = OpenSearchStore(settings)
        store.ensure_index(INFO)
        store.upsert(chunks, _vectors(len(chunks)))
        assert faults.registry_requests > 1 and faults.rejected > 0
        registry = registry_name(store.client.indices.get_alias(name=settings.alias).popitem()[0])
        rows = read_registry(lambda body: store.client.search(index=registry, body=body))
        assert {key for key, _, _ in rows} == {c.acl_version for c in chunks}
        assert store.count() == len(chunks)
        drop(store, settings.alias)
