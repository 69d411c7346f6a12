from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from rag.embeddings.hashing import HashEmbedder
from rag.errors import EmbeddingMismatchError, IndexNotFoundError, InvalidRequestError
from rag.identity import UserContext
from rag.models import Acl, SearchHit
from rag.retrieval.core import Retriever
from rag.stores.acl_keys import AclKeyOptions
from rag.stores.base import IndexInfo
from rag.stores.limits import MAX_K
from rag.stores.opensearch import OpenSearchStore, index_name
from tests.acl_property import filter_corpus, run_acl_property, run_filter_property
from tests.contract import (
    CORPUS,
    EMBEDDER,
    INFO,
    FilterContract,
    StoreContract,
    TextSearchContract,
    put,
    search,
)
from tests.opensearch_node import drop, os_settings

pytestmark = pytest.mark.integration


class TestOpenSearchContract(StoreContract, FilterContract, TextSearchContract):
    pass


def test_no_filter_reaches_past_the_acl_on_a_real_node(store: OpenSearchStore) -> None:
    """A few drawn (filter, user) pairs on k-NN, BM25 and hybrid (the embedded store runs 100):
    every hit readable and admitted, and exactly the readable, admitted chunks."""
    chunks = filter_corpus()
    put(store, chunks)
    assert run_filter_property(store, chunks, examples=25) == 75


@pytest.mark.parametrize(
    "min_principals", [10**9, 0], ids=["principals", "acl-keys"]
)  # the ACL-key path forced on every search, or never used
def test_acl_property_on_real_node(opensearch_url: str, min_principals: int) -> None:
    @contextmanager
    def make(dim: int) -> Iterator[OpenSearchStore]:
        settings = os_settings(opensearch_url, alias=f"prop-{uuid.uuid4().hex[:8]}")
        store = OpenSearchStore(settings, acl_keys=AclKeyOptions(min_principals=min_principals))
        store.ensure_index(IndexInfo("prop", dim))
        try:
            yield store
        finally:
            drop(store, settings.alias)

    # 2,500 trials here (10,000 on the embedded store run the same property in `make test`)
    tally = run_acl_property(make, corpora=25, trials_per_corpus=100, optimize=False)
    assert tally.trials >= 2_500
    # lucene picks exact search for small filtered sets and HNSW otherwise
    assert tally.recall_sum / tally.trials >= 0.99


def test_update_acl_changes_only_acl(store: OpenSearchStore) -> None:
    put(store, CORPUS)
    before = {
        h.chunk.id: h
        for h in store.search(EMBEDDER.embed_batch(["salary"])[0], frozenset({"group:hr"}), 10)
    }
    assert store.update_acl("hr", Acl(allow=frozenset({"group:board"}))) == 2
    assert search(store, "salary", {"group:hr"}) == []
    after = store.search(EMBEDDER.embed_batch(["salary"])[0], frozenset({"group:board"}), 10)
    assert {h.chunk.id for h in after} == set(before)
    for hit in after:
        assert hit.chunk.text == before[hit.chunk.id].chunk.text
        assert hit.score == pytest.approx(before[hit.chunk.id].score, abs=1e-6)
    doc = store.client.get(index=store._target(), id=CORPUS[0].id)["_source"]
    assert np.allclose(doc["vector"], EMBEDDER.embed_batch([CORPUS[0].text])[0], atol=1e-6)


def test_model_swap_behind_alias(opensearch_url: str) -> None:
    settings = os_settings(opensearch_url)
    live = OpenSearchStore(settings)
    live.ensure_index(INFO)
    put(live, CORPUS)
    new_info = IndexInfo("other-model", EMBEDDER.dimension)
    new_index = index_name(settings.alias, new_info)
    building = OpenSearchStore(settings, index=new_index)
    building.ensure_index(new_info)
    put(building, CORPUS[:2])
    # the alias still serves the old model while the new index is built
    assert OpenSearchStore(settings).index_info() == INFO
    building.promote(new_index)
    reader = OpenSearchStore(settings)
    assert reader.index_info() == new_info
    assert reader.count() == 2
    with pytest.raises(EmbeddingMismatchError):
        OpenSearchStore(settings).ensure_index(INFO)
    drop(live, settings.alias)


def test_construction_does_no_io() -> None:
    store = OpenSearchStore(os_settings("http://127.0.0.1:1"))
    assert store._client is None


READER = frozenset({"user:alice", "group:hr", "public"})


@pytest.mark.parametrize("k", [0, -1, MAX_K + 1])
def test_k_out_of_bounds_is_refused(store: OpenSearchStore, k: int) -> None:
    put(store, CORPUS)
    vector = EMBEDDER.embed_batch(["salary"])[0]
    with pytest.raises(InvalidRequestError, match=f"between 1 and {MAX_K}"):
        store.search(vector, READER, k)
    with pytest.raises(InvalidRequestError, match=f"between 1 and {MAX_K}"):
        store.search_text("salary", READER, k)
    with pytest.raises(InvalidRequestError, match=f"between 1 and {MAX_K}"):
        store.search_hybrid("salary", vector, READER, k)
    with pytest.raises(InvalidRequestError, match=f"between 1 and {MAX_K}"):
        Retriever(store, EMBEDDER).retrieve("salary", UserContext.of("alice", ["hr"]), k)


def test_k_at_the_maximum_is_served(store: OpenSearchStore) -> None:
    put(store, CORPUS)
    vector = EMBEDDER.embed_batch(["salary"])[0]
    assert len(store.search(vector, READER, MAX_K)) == 3
    assert len(store.search_text("salary", READER, MAX_K)) == 3
    assert len(store.search_hybrid("salary", vector, READER, MAX_K)) == 3


def test_queries_on_a_missing_alias_create_nothing(opensearch_url: str) -> None:
    settings = os_settings(opensearch_url)
    store = OpenSearchStore(settings)
    vector = EMBEDDER.embed_batch(["salary"])[0]
    reads = [
        lambda: Retriever(store, EMBEDDER).retrieve("salary", UserContext.of("alice")),
        lambda: Retriever(store, EMBEDDER, mode="hybrid").retrieve("salary", UserContext.of("a")),
        lambda: store.search(vector, READER, 5),
        lambda: store.search_text("salary", READER, 5),
        lambda: store.search_hybrid("salary", vector, READER, 5),
        store.count,
    ]
    for read in reads:
        with pytest.raises(IndexNotFoundError, match=r"nothing ingested.*run rag ingest first"):
            read()
    assert store.index_info() is None
    assert not store.client.indices.exists_alias(name=settings.alias)
    assert not store.client.indices.exists(index=index_name(settings.alias, INFO))


def test_query_with_another_model_is_refused_and_writes_nothing(store: OpenSearchStore) -> None:
    put(store, CORPUS)
    indices = sorted(store.client.indices.get(index="*", expand_wildcards="all"))
    reader = OpenSearchStore(store._settings)
    with pytest.raises(EmbeddingMismatchError):
        Retriever(reader, HashEmbedder(32)).retrieve("salary", UserContext.of("alice"))
    assert sorted(store.client.indices.get(index="*", expand_wildcards="all")) == indices
    assert reader.index_info() == INFO


def test_an_index_made_before_filters_is_refused_then_backfilled(opensearch_url: str) -> None:
    from rag.errors import StoreError
    from rag.filters import parse_filter
    from rag.stores.opensearch import _to_source
    from rag.stores.opensearch_dsl import FILTER_MAPPING, index_body
    from tests.contract import FILTERED, WIDE_PRINCIPALS, expected_ids

    settings = os_settings(opensearch_url)
    index = f"{settings.alias}--old"
    body = index_body(INFO.dimension, INFO.model_id, shards=1, replicas=0, m=16, ef_construction=64)
    for name in FILTER_MAPPING:  # the mapping of the previous release
        del body["mappings"]["properties"][name]
    client = OpenSearchStore(settings).client
    client.indices.create(index=index, body=body)
    client.indices.put_alias(index=index, name=settings.alias)
    vectors = EMBEDDER.embed_batch([c.text for c in FILTERED])
    for chunk, vector in zip(FILTERED, vectors, strict=True):
        source = {k: v for k, v in _to_source(chunk, vector).items() if k not in FILTER_MAPPING}
        client.index(index=index, id=chunk.id, body=source, refresh=True)

    reader = OpenSearchStore(settings)
    vector = EMBEDDER.embed_batch(["budget"])[0]
    readable = {c.id for c in FILTERED if c.acl.permits(WIDE_PRINCIPALS)}
    assert {h.chunk.id for h in reader.search(vector, WIDE_PRINCIPALS, 50)} == readable
    flt = parse_filter('source = "wiki" and attr.team != "eng"')
    with pytest.raises(StoreError, match="predates metadata filters"):
        reader.search_text("budget", WIDE_PRINCIPALS, 50, filter=flt)

    OpenSearchStore(settings).ensure_index(INFO)  # a writer adds the fields and backfills
    after = OpenSearchStore(settings)
    want = expected_ids(FILTERED, WIDE_PRINCIPALS, flt)
    assert want
    for hits in (
        after.search(vector, WIDE_PRINCIPALS, 50, filter=flt),
        after.search_text("budget", WIDE_PRINCIPALS, 50, filter=flt),
        after.search_hybrid("budget", vector, WIDE_PRINCIPALS, 50, filter=flt),
    ):
        assert {h.chunk.id for h in hits} == want
    client.indices.delete(index=index)


def test_exact_and_graph_plans_return_only_readable_chunks(opensearch_url: str) -> None:
    """The same index searched through the HNSW graph (exact search off) and exactly (every
    admitted vector scored): both return only chunks the caller may read, the exact plan the
    brute-force top-k over exactly those, with the cosine as the score; the default plan
    searches a narrow ACL exactly and a broad one through the graph, with the same answers."""
    import asyncio

    from rag.stores.opensearch_async import AsyncOpenSearchStore
    from tests.contract import make_chunk

    rng = np.random.default_rng(7)
    rows, dim = 400, 16
    vectors = rng.normal(size=(rows, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    groups = ["group:broad" if i % 2 else "group:narrow" if i % 25 == 0 else "group:other"
              for i in range(rows)]  # fmt: skip
    chunks = [
        make_chunk(f"d{i}", 0, f"text {i}", {groups[i], "user:DOMAIN\\o'brien"})
        for i in range(rows)
    ]
    settings = os_settings(opensearch_url)
    graph = OpenSearchStore(settings.model_copy(update={"exact_max_rows": 0}))
    exact = OpenSearchStore(settings.model_copy(update={"exact_max_rows": 10**6}))
    default = OpenSearchStore(settings)
    graph.ensure_index(IndexInfo("plan", dim))

    async def exact_async(q: np.ndarray, principals: frozenset[str]) -> list[SearchHit]:
        aio = AsyncOpenSearchStore(settings.model_copy(update={"exact_max_rows": 10**6}))
        try:
            return await aio.search(q, principals, 10)
        finally:
            await aio.aclose()

    try:
        graph.upsert(chunks, vectors)
        for user in ("group:narrow", "group:broad"):
            principals = frozenset({user})
            readable = np.array([g == user for g in groups])
            for q in rng.normal(size=(5, dim)).astype(np.float32):
                q /= np.linalg.norm(q)
                cos = vectors @ q
                truth = [chunks[i].id for i in np.argsort(-cos) if readable[i]][:10]
                found = {name: s.search(q, principals, 10) for name, s in
                         (("graph", graph), ("exact", exact), ("default", default))}  # fmt: skip
                for hits in found.values():
                    assert all(h.chunk.acl.permits(principals) for h in hits)
                    for h in hits:
                        assert h.score == pytest.approx(
                            float(cos[int(h.chunk.document_id[1:])]), abs=1e-4
                        )
                assert [h.chunk.id for h in found["exact"]] == truth
                hybrid = exact.search_hybrid("text", q, principals, 10)
                assert all(h.chunk.acl.permits(principals) for h in hybrid)
                assert [h.chunk.id for h in asyncio.run(exact_async(q, principals))] == truth
            assert default._counts.cached(count_key_of(default, principals)) == readable.sum()
        assert not graph.search(vectors[0], frozenset({"group:nobody"}), 10)
        assert not exact.search(vectors[0], frozenset({"group:nobody"}), 10)
    finally:
        drop(graph, settings.alias)


def count_key_of(store: OpenSearchStore, principals: frozenset[str]) -> str:
    from rag.stores.opensearch_dsl import count_key, search_filter

    return count_key(store._read_target(), search_filter(principals, None, None, None))
