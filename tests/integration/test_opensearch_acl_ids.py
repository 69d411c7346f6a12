"""Compact ACL keys (issue 16 §2) on a real OpenSearch node: the keyed path meets the store
contract and the ACL property, every ACL write moves ``acl_key`` with ``allow``/``deny`` (a
revocation hides at once, even from a reader with a stale cache), unregistered keys fail closed
and an index with unkeyed chunks is searched by principals."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from rag.config import Settings
from rag.identity import PUBLIC
from rag.models import Acl
from rag.stores.acl_keys import ACL_KEY, AclKeyOptions, acl_key
from rag.stores.opensearch import OpenSearchStore, _to_source
from rag.stores.opensearch_acls import registry_name
from rag.stores.opensearch_async import AsyncOpenSearchStore
from tests.contract import (
    CORPUS,
    EMBEDDER,
    INFO,
    FilterContract,
    StoreContract,
    TextSearchContract,
    make_chunk,
    put,
)
from tests.opensearch_node import drop, os_settings
from tests.sync_contract import ACCESS_CORE, SyncContract

pytestmark = pytest.mark.integration

KEYED = AclKeyOptions(min_principals=0)
STALE = AclKeyOptions(min_principals=0, refresh_seconds=1e9)
MANY = frozenset({PUBLIC, "user:alice", *(f"group:g{i:04d}" for i in range(1000))})


@pytest.fixture
def store(opensearch_url: str) -> Iterator[OpenSearchStore]:
    settings = os_settings(opensearch_url)
    s = OpenSearchStore(settings, acl_keys=KEYED)
    s.ensure_index(INFO)
    yield s
    drop(s, settings.alias)


class TestKeyedOpenSearchContract(StoreContract, FilterContract, TextSearchContract):
    """The store contract with every search on the ACL-key path."""


def _ids(store: OpenSearchStore, principals: frozenset[str]) -> set[str]:
    vector = EMBEDDER.embed_batch(["salary"])[0]
    hits = [
        *store.search(vector, principals, 10),
        *store.search_text("salary", principals, 10),
        *store.search_hybrid("salary", vector, principals, 10),
    ]
    return {h.chunk.document_id for h in hits}


def test_update_acl_revocation_hides_even_from_a_stale_reader(store: OpenSearchStore) -> None:
    put(store, CORPUS)
    hr = frozenset({"group:hr", "user:hana", PUBLIC})
    reader = OpenSearchStore(store._settings, acl_keys=STALE)
    assert "hr" in _ids(reader, hr) and "hr" in _ids(store, hr)
    board = Acl(allow=frozenset({"group:board"}))
    assert store.update_acl("hr", board) == 2
    assert "hr" not in _ids(store, hr)
    assert "hr" not in _ids(reader, hr)
    doc = store.client.get(index=store._target(), id=CORPUS[0].id)["_source"]
    assert doc[ACL_KEY] == acl_key(board)


def test_tombstone_and_narrowing_hide_on_the_keyed_path(store: OpenSearchStore) -> None:
    put(store, CORPUS)
    store.update_acl("pub", Acl())
    assert "pub" not in _ids(store, MANY)
    eng = frozenset({"group:eng", PUBLIC})
    store.update_acl("eng", CORPUS[3].acl.meet(Acl(allow=frozenset({"user:ceo"}))))
    assert "eng" not in _ids(store, eng)
    assert "eng" in _ids(store, frozenset({"user:ceo", PUBLIC}))


def test_upsert_with_a_narrower_acl_hides_from_a_stale_reader(store: OpenSearchStore) -> None:
    put(store, CORPUS)
    reader = OpenSearchStore(store._settings, acl_keys=STALE)
    assert "pub" in _ids(reader, MANY)
    put(store, [make_chunk("pub", 0, CORPUS[2].text, {"group:hr"})])
    assert "pub" not in _ids(store, MANY) and "pub" not in _ids(reader, MANY)


def test_async_store_on_the_keyed_path(store: OpenSearchStore) -> None:
    put(store, CORPUS)
    vector = EMBEDDER.embed_batch(["salary"])[0]
    ids = [c.id for c in CORPUS]

    async def run() -> tuple[set[str], set[str], set[str]]:
        aio = AsyncOpenSearchStore(store._settings, acl_keys=KEYED)
        try:
            dense = {h.chunk.document_id for h in await aio.search(vector, MANY, 10)}
            hybrid = await aio.search_hybrid("salary", vector, MANY, 10)
            fetched = {c.document_id for c in await aio.fetch_chunks(ids, MANY)}
            return dense, {h.chunk.document_id for h in hybrid}, fetched
        finally:
            await aio.aclose()

    assert asyncio.run(run()) == ({"pub"}, {"pub"}, {"pub"})
    store.update_acl("pub", Acl())
    assert asyncio.run(run()) == (set(), set(), set())


def test_a_key_missing_from_the_registry_is_hidden(store: OpenSearchStore) -> None:
    put(store, CORPUS)
    registry = registry_name(store._target())
    store.client.delete(index=registry, id=acl_key(CORPUS[2].acl), refresh=True)
    fresh = OpenSearchStore(store._settings, acl_keys=KEYED)
    assert "pub" not in _ids(fresh, MANY)  # fail closed
    assert "pub" in _ids(OpenSearchStore(store._settings), frozenset({PUBLIC}))


def _unkeyed(store: OpenSearchStore, doc: str, allow: set[str]) -> str:
    """A chunk as the previous release wrote it (no ACL key); returns its id."""
    chunk = make_chunk(doc, 0, f"salary {doc}", allow)
    source = _to_source(chunk, EMBEDDER.embed_batch([chunk.text])[0])
    del source[ACL_KEY]
    store.client.index(index=store._target(), id=chunk.id, body=source, refresh=True)
    return chunk.id


def test_an_index_with_unkeyed_chunks_is_searched_by_principals_until_keyed(
    store: OpenSearchStore,
) -> None:
    put(store, CORPUS)
    _unkeyed(store, "old", {PUBLIC})
    legacy = OpenSearchStore(store._settings, acl_keys=KEYED)  # reads never write
    assert not legacy._keyed(legacy._read_target())
    assert _ids(legacy, MANY) == {"pub", "old"}  # nothing disappears by surprise
    writer = OpenSearchStore(store._settings, acl_keys=KEYED)
    writer.ensure_index(INFO)  # registers the ACLs and keys the old chunks
    assert writer._keyed(writer._read_target())
    assert _ids(writer, MANY) == {"pub", "old"}
    assert _ids(writer, frozenset({"group:hr", "user:mallory", PUBLIC})) == {"hr", "pub", "old"}


def test_backfill_skips_a_chunk_whose_acl_changed_meanwhile(store: OpenSearchStore) -> None:
    from rag.stores.opensearch_acls import key_update

    chunk_id = _unkeyed(store, "old", {PUBLIC})
    index = store._target()
    stale = store.client.get(index=index, id=chunk_id)["_source"]
    narrowed = {"doc": {"acl_allow": ["group:hr"]}}  # a writer of the previous release
    store.client.update(index=index, id=chunk_id, body=narrowed, refresh=True)
    _, update = key_update(stale)
    store.client.update(index=index, id=chunk_id, body=update, refresh=True)
    assert ACL_KEY not in store.client.get(index=index, id=chunk_id)["_source"]
    fresh = store.client.get(index=index, id=chunk_id)["_source"]
    acl, update = key_update(fresh)
    store.client.update(index=index, id=chunk_id, body=update, refresh=True)
    assert store.client.get(index=index, id=chunk_id)["_source"][ACL_KEY] == acl_key(acl)


@pytest.fixture
def sync_settings(opensearch_sync_settings: Settings) -> Settings:
    store = opensearch_sync_settings.store.model_copy(update={"acl_ids_min_principals": 0})
    return opensearch_sync_settings.model_copy(update={"store": store})


class TestKeyedOpenSearchSync(SyncContract):
    """The sync paths that write ACLs (revocation, restore, narrowing before a re-embed,
    tombstones, quarantine and pending hiding), read back on the ACL-key path."""

    only = ACCESS_CORE | {
        "test_revoking_a_user_takes_one_sync",
        "test_tombstoned_document_that_returns_is_restored_cheaply",
        "test_empty_complete_listing_hides_all_but_purges_nothing",
        "test_acl_narrowed_with_a_content_change_applies_before_reembedding",
        "test_revocation_of_a_pending_document_hides_it",
    }
