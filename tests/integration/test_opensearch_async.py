"""Retrieval on a real OpenSearch node: the async path (``AsyncOpenSearch``) answers as the sync
one in every mode, with metadata filters, context expansion and batches, all under the ACL."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from datetime import timedelta
from typing import Any, TypeVar

import pytest

from rag.config import OpenSearchSettings
from rag.filters import Eq
from rag.identity import UserContext
from rag.models import Acl, Chunk, Citation
from rag.retrieval.core import Mode, Retriever
from rag.stores.opensearch import OpenSearchStore
from rag.stores.opensearch_async import AsyncOpenSearchStore
from tests.contract import CORPUS, EMBEDDER, INFO, put
from tests.opensearch_node import drop, os_settings

pytestmark = pytest.mark.integration
T = TypeVar("T")

ALICE = UserContext.of("alice", ["hr"])
GUEST = UserContext.of("guest")
GUIDE = [
    Chunk(
        id=Chunk.make_id("guide", i),
        document_id="guide",
        source="wiki",
        ordinal=i,
        text=f"guide badge step {i} for new hires",
        token_count=7,
        acl=Acl(allow=frozenset({"group:hr"} if i == 2 else {"public"})),
        citation=Citation(document_id="guide", uri="guide.md", title="Guide", section="Badges"),
    )
    for i in range(4)
]


@pytest.fixture(scope="module")
def settings(opensearch_url: str) -> Iterator[OpenSearchSettings]:
    """One index for the module (the tests only read it)."""
    settings = os_settings(opensearch_url)
    store = OpenSearchStore(settings)
    store.ensure_index(INFO)
    put(store, [*CORPUS, *GUIDE])
    yield settings
    drop(store, settings.alias)


@pytest.fixture(scope="module")
def retriever(settings: OpenSearchSettings) -> Retriever:
    """A retriever with both stores: sync calls on the sync client, async on AsyncOpenSearch."""
    store, aio = OpenSearchStore(settings), AsyncOpenSearchStore(settings)
    return Retriever(store, EMBEDDER, top_k=4, async_store=aio)


def _run(retriever: Retriever, work: Coroutine[Any, Any, T]) -> T:
    """``work`` on a fresh event loop, closing that loop's OpenSearch connections after it."""

    async def run() -> T:
        try:
            return await work
        finally:
            await retriever.aclose()

    return asyncio.run(run())


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_async_answers_as_sync_in_every_mode(retriever: Retriever, mode: Mode) -> None:
    queries = ["salary review", "badge step 1"]
    for user in (ALICE, GUEST):
        sync = [retriever.retrieve(q, user, mode=mode) for q in queries]
        assert all(h.chunk.acl.permits(user.principals()) for hits in sync for h in hits)
        assert _run(retriever, retriever.aretrieve_many(queries, user, mode=mode)) == sync
        assert retriever.retrieve_many(queries, user, mode=mode) == sync
    assert {h.chunk.document_id for h in sync[0]} <= {"pub", "guide"}  # the guest's


def test_async_filter_narrows_inside_the_acl(retriever: Retriever) -> None:
    hr = Eq("document_id", "hr")
    for mode in ("dense", "bm25", "hybrid"):
        hits = _run(retriever, retriever.aretrieve("salary", ALICE, mode=mode, filter=hr))
        assert {h.chunk.document_id for h in hits} == {"hr"}
        assert _run(retriever, retriever.aretrieve("salary", GUEST, mode=mode, filter=hr)) == []


def test_expansion_on_opensearch_fetches_under_the_acl(retriever: Retriever) -> None:
    query = "guide badge step 1 for new hires"
    for expand in ("neighbors", "section"):
        guest = _run(retriever, retriever.asearch(query, GUEST, k=1, expand=expand))
        assert [c.ordinal for c in guest.passages[0].chunks] == [0, 1]  # 2 is hr's only
        hr = _run(retriever, retriever.asearch(query, ALICE, k=1, expand=expand))
        want = [0, 1, 2] if expand == "neighbors" else [0, 1, 2, 3]
        assert [c.ordinal for c in hr.passages[0].chunks] == want
        assert retriever.search(query, ALICE, k=1, expand=expand).passages == hr.passages


def test_async_fetch_and_freshness(retriever: Retriever, settings: OpenSearchSettings) -> None:
    store = AsyncOpenSearchStore(settings)
    ids = [c.id for c in GUIDE]

    async def run() -> None:
        guest = await store.fetch_chunks(ids, GUEST.principals())
        assert sorted(c.ordinal for c in guest) == [0, 1, 3]
        assert {c.id: c for c in await store.fetch_chunks(ids, ALICE.principals())} == {
            c.id: c for c in GUIDE
        }
        # never confirmed by a source listing: a freshness bound hides every chunk
        fresh = await retriever.aretrieve("salary", ALICE, max_acl_age=timedelta(hours=1))
        assert fresh == []
        await store.aclose()

    asyncio.run(run())
