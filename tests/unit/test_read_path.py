"""Queries only read (issue 12): a store with nothing ingested is a clear error and nothing is
created, on disk or in the cluster; an index of another model is refused; k is bounded."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rag.cli import app
from rag.config import OpenSearchSettings, Settings, StoreSettings
from rag.embeddings.hashing import HashEmbedder
from rag.errors import (
    EmbeddingMismatchError,
    IndexNotFoundError,
    InvalidRequestError,
    RagError,
    StoreError,
)
from rag.filters import Eq
from rag.identity import UserContext
from rag.retrieval.core import Retriever
from rag.stores.lancedb import LanceDBStore
from rag.stores.limits import MAX_K
from rag.stores.opensearch import OpenSearchStore, index_name
from rag.stores.opensearch_async import AsyncOpenSearchStore
from tests.contract import CORPUS, EMBEDDER, INFO, put

runner = CliRunner()
ALICE = UserContext.of("alice", ["hr"])
PRINCIPALS = ALICE.principals()
VECTOR = EMBEDDER.embed_batch(["salary"])[0]


def _tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


# -- LanceDB ---------------------------------------------------------------------------------
def test_query_on_a_missing_data_dir_raises_and_creates_nothing(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "typo", embedding={"provider": "hash"})
    retriever = Retriever.from_settings(settings)
    with pytest.raises(IndexNotFoundError, match=r"nothing ingested at .*run rag ingest first"):
        retriever.retrieve("salary", ALICE)
    with pytest.raises(IndexNotFoundError, match=str(settings.store_uri)):
        retriever.retrieve("salary", ALICE)  # the second query too
    assert _tree(tmp_path) == []


@pytest.mark.parametrize("layout", ["empty data dir", "empty store dir", "meta table only"])
def test_reads_of_an_unfinished_store_create_nothing(tmp_path: Path, layout: str) -> None:
    uri = tmp_path / "data" / "lancedb"
    if layout == "empty data dir":
        uri.parent.mkdir()
    elif layout == "empty store dir":
        uri.mkdir(parents=True)
    else:  # a run killed between writing the model and creating the chunks table
        import lancedb
        import pyarrow as pa

        meta = pa.table({"key": ["model_id", "dimension"], "value": [INFO.model_id, "64"]})
        lancedb.connect(str(uri)).create_table("chunks__meta", meta)
    before = _tree(tmp_path)
    store = LanceDBStore(uri, StoreSettings())
    reads: dict[str, Callable[[], object]] = {
        "search": lambda: store.search(VECTOR, PRINCIPALS, 5),
        "count": store.count,
        "chunk_ids": store.chunk_ids,
        "retrieve": lambda: Retriever(store, EMBEDDER).retrieve("salary", ALICE),
    }
    for name, read in reads.items():
        with pytest.raises(IndexNotFoundError, match="nothing ingested"):
            read()
        assert _tree(tmp_path) == before, name


def test_index_info_of_a_missing_store_is_none_and_creates_nothing(tmp_path: Path) -> None:
    assert LanceDBStore(tmp_path / "db", StoreSettings()).index_info() is None
    assert not (tmp_path / "db").exists()


def test_writes_still_create_the_index(tmp_path: Path) -> None:
    store = LanceDBStore(tmp_path / "db", StoreSettings())
    store.ensure_index(INFO)
    put(store, CORPUS)
    reader = LanceDBStore(tmp_path / "db", StoreSettings())
    assert reader.count() == len(CORPUS)
    assert {h.chunk.document_id for h in reader.search(VECTOR, PRINCIPALS, 10)} == {"hr", "pub"}
    assert reader.index_info() == INFO


def test_query_with_another_model_is_a_mismatch_and_changes_nothing(tmp_path: Path) -> None:
    store = LanceDBStore(tmp_path / "db", StoreSettings())
    store.ensure_index(INFO)
    put(store, CORPUS)
    before = _tree(tmp_path)
    reader = LanceDBStore(tmp_path / "db", StoreSettings())
    for other in (HashEmbedder(32), _Renamed(EMBEDDER)):
        with pytest.raises(EmbeddingMismatchError, match="index was built with"):
            Retriever(reader, other).retrieve("salary", ALICE)
    assert _tree(tmp_path) == before
    assert reader.index_info() == INFO


class _Renamed:
    """The same vectors under another model id (same dimension)."""

    def __init__(self, inner: HashEmbedder) -> None:
        self.embed_batch = inner.embed_batch
        self.dimension = inner.dimension
        self.model_id = "another-model"


# -- the CLI -----------------------------------------------------------------------------------
def test_cli_query_on_a_typo_data_dir_is_a_message_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAG_EMBEDDING__PROVIDER", "hash")
    typo = tmp_path / "typo"
    result = runner.invoke(
        app, ["query", "vacation days", "--user", "alice", "--data-dir", str(typo)]
    )
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # typer.Exit, not an uncaught error
    output = " ".join(result.output.split())  # rich wraps long lines
    assert "error: nothing ingested at" in output and "run rag ingest first" in output
    assert "Traceback" not in output
    assert not typo.exists()


def test_cli_query_with_another_model_names_the_mismatch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LanceDBStore(tmp_path / "data" / "lancedb", StoreSettings())
    store.ensure_index(INFO)
    put(store, CORPUS)
    monkeypatch.setenv("RAG_EMBEDDING__PROVIDER", "hash")  # 384 dims; the index has 64
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    result = runner.invoke(app, ["query", "salary", "--user", "alice"])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "index was built with" in " ".join(result.output.split())


# -- OpenSearch, on a client that fails any write ----------------------------------------------
class _ReadOnlyClient:
    """An OpenSearch client double: answers the calls a read makes, records every call, and
    fails any other (create, update_aliases, bulk, index, ...)."""

    def __init__(self, target: str | None = None, meta: dict[str, Any] | None = None) -> None:
        self.calls: list[str] = []
        self.indices = _Indices(self, target, meta)

    def search(self, index: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append("search")
        return {"hits": {"hits": []}}

    def msearch(self, body: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append("msearch")
        return {"responses": [{"hits": {"hits": []}}, {"hits": {"hits": []}}]}

    def count(self, index: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        self.calls.append("count")
        return {"count": 0}

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a read called client.{name}")


class _Indices:
    def __init__(self, client: _ReadOnlyClient, target: str | None, meta: Any) -> None:
        self._client, self._target, self._meta = client, target, meta

    def get_alias(self, name: str) -> dict[str, Any]:
        from opensearchpy.exceptions import NotFoundError

        self._client.calls.append("indices.get_alias")
        if self._target is None:
            raise NotFoundError(404, "aliases_not_found_exception", {})
        return {self._target: {"aliases": {name: {}}}}

    def exists(self, index: str) -> bool:
        self._client.calls.append("indices.exists")
        return index == self._target

    def get_mapping(self, index: str) -> dict[str, Any]:
        self._client.calls.append("indices.get_mapping")
        return {index: {"mappings": {"_meta": self._meta}}}

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a read called client.indices.{name}")


def _opensearch(client: _ReadOnlyClient, index: str | None = None) -> OpenSearchStore:
    return OpenSearchStore(OpenSearchSettings(alias="kb"), index=index, client=client)


@pytest.mark.parametrize("explicit_index", [None, "kb--building"])
def test_opensearch_reads_of_a_missing_index_create_nothing(explicit_index: str | None) -> None:
    client = _ReadOnlyClient()
    store = _opensearch(client, explicit_index)
    reads: dict[str, Callable[[], object]] = {
        "search": lambda: store.search(VECTOR, PRINCIPALS, 5),
        "search_text": lambda: store.search_text("salary", PRINCIPALS, 5),
        "search_hybrid": lambda: store.search_hybrid("salary", VECTOR, PRINCIPALS, 5),
        "count": store.count,
        "retrieve dense": lambda: Retriever(store, EMBEDDER).retrieve("salary", ALICE),
        "retrieve hybrid": lambda: Retriever(store, EMBEDDER, mode="hybrid").retrieve(
            "salary", ALICE
        ),
    }
    for name, read in reads.items():
        with pytest.raises(IndexNotFoundError, match="nothing ingested at OpenSearch") as caught:
            read()
        assert "run rag ingest first" in str(caught.value), name
        assert (explicit_index or "alias kb") in str(caught.value)
    assert store.index_info() is None
    assert set(client.calls) <= {"indices.get_alias", "indices.exists"}  # no search was sent


def test_opensearch_query_of_another_model_is_a_mismatch_and_writes_nothing() -> None:
    target = index_name("kb", INFO)
    client = _ReadOnlyClient(target, {"model_id": "another-model", "dimension": INFO.dimension})
    with pytest.raises(EmbeddingMismatchError, match="another-model"):
        Retriever(_opensearch(client), EMBEDDER).retrieve("salary", ALICE)
    assert "search" not in client.calls


def test_opensearch_query_of_an_existing_index_only_reads() -> None:
    target = index_name("kb", INFO)
    client = _ReadOnlyClient(target, {"model_id": INFO.model_id, "dimension": INFO.dimension})
    store = _opensearch(client)
    for mode in ("dense", "bm25", "hybrid"):
        assert Retriever(store, EMBEDDER, mode=mode).retrieve("salary", ALICE) == []
    assert store.count() == 0
    assert {"search", "msearch", "count"} <= set(client.calls)


# -- bounds on k ---------------------------------------------------------------------------------
BAD_K = [0, -1, MAX_K + 1, 10**9]


@pytest.fixture
def lance(tmp_path: Path) -> LanceDBStore:
    store = LanceDBStore(tmp_path / "db", StoreSettings())
    store.ensure_index(INFO)
    put(store, CORPUS)
    return store


def _is_clear(error: pytest.ExceptionInfo[InvalidRequestError]) -> None:
    assert isinstance(error.value, RagError) and isinstance(error.value, ValueError)
    assert not isinstance(error.value, StoreError)
    assert f"k must be between 1 and {MAX_K}" in str(error.value)


@pytest.mark.parametrize("k", BAD_K)
def test_lancedb_search_refuses_k_out_of_bounds(lance: LanceDBStore, k: int) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        lance.search(VECTOR, PRINCIPALS, k)
    _is_clear(caught)


@pytest.mark.parametrize("k", BAD_K)
def test_retriever_refuses_k_out_of_bounds(lance: LanceDBStore, k: int) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        Retriever(lance, EMBEDDER).retrieve("salary", ALICE, k)
    _is_clear(caught)
    with pytest.raises(InvalidRequestError) as caught:
        Retriever(lance, EMBEDDER, top_k=k)
    _is_clear(caught)


@pytest.mark.parametrize("k", BAD_K)
def test_opensearch_searches_refuse_k_out_of_bounds_before_any_request(k: int) -> None:
    client = _ReadOnlyClient()
    store = _opensearch(client)
    searches: dict[str, Callable[[], object]] = {
        "search": lambda: store.search(VECTOR, PRINCIPALS, k),
        "search_text": lambda: store.search_text("salary", PRINCIPALS, k),
        "search_hybrid": lambda: store.search_hybrid("salary", VECTOR, PRINCIPALS, k),
    }
    for name, search in searches.items():
        with pytest.raises(InvalidRequestError) as caught:
            search()
        _is_clear(caught)
        assert client.calls == [], name


@pytest.mark.parametrize("k", [1, MAX_K])
def test_k_at_the_bounds_is_fine(lance: LanceDBStore, k: int) -> None:
    hits = lance.search(VECTOR, PRINCIPALS, k)
    assert len(hits) == min(k, 3)  # alice may read three of the chunks
    assert len(Retriever(lance, EMBEDDER, top_k=k).retrieve("salary", ALICE)) == min(k, 3)


# -- the async OpenSearch read path -----------------------------------------------------------
class _Awaited:
    """A client double awaited as ``AsyncOpenSearch`` is: each call of the wrapped double
    becomes a coroutine; ``indices`` is wrapped the same way."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "indices":
            return _Awaited(self._inner.indices)
        target = getattr(self._inner, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return target(*args, **kwargs)

        return call


class _Recording(_ReadOnlyClient):
    """The read-only double, keeping every search body it was sent."""

    def __init__(self, target: str | None = None, meta: dict[str, Any] | None = None) -> None:
        super().__init__(target, meta)
        self.bodies: list[Any] = []

    def search(self, index: str, body: dict[str, Any]) -> dict[str, Any]:
        self.bodies.append((index, body))
        return super().search(index, body)

    def msearch(self, body: list[dict[str, Any]]) -> dict[str, Any]:
        self.bodies.append(body)
        return super().msearch(body)

    def count(self, index: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        self.calls.append("count")
        return {"count": 0}

    def close(self) -> None:
        self.calls.append("close")


def _async_store(client: _ReadOnlyClient, index: str | None = None) -> AsyncOpenSearchStore:
    return AsyncOpenSearchStore(
        OpenSearchSettings(alias="kb"), index=index, client_factory=lambda: _Awaited(client)
    )


@pytest.mark.parametrize("explicit_index", [None, "kb--building"])
def test_async_opensearch_reads_of_a_missing_index_create_nothing(
    explicit_index: str | None,
) -> None:
    client = _ReadOnlyClient()
    store = _async_store(client, explicit_index)
    retriever = Retriever(_opensearch(_ReadOnlyClient()), EMBEDDER, async_store=store)

    async def reads() -> None:
        assert await store.index_info() is None
        searches: dict[str, Callable[[], Any]] = {
            "search": lambda: store.search(VECTOR, PRINCIPALS, 5),
            "search_text": lambda: store.search_text("salary", PRINCIPALS, 5),
            "search_hybrid": lambda: store.search_hybrid("salary", VECTOR, PRINCIPALS, 5),
            "fetch_chunks": lambda: store.fetch_chunks(["a" * 32], PRINCIPALS),
            "count": store.count,
            "aretrieve": lambda: retriever.aretrieve("salary", ALICE),
        }
        for name, read in searches.items():
            with pytest.raises(IndexNotFoundError, match="nothing ingested at OpenSearch") as e:
                await read()
            assert (explicit_index or "alias kb") in str(e.value), name

    asyncio.run(reads())
    assert set(client.calls) <= {"indices.get_alias", "indices.exists"}  # no search was sent


def test_async_opensearch_sends_the_sync_stores_request_bodies() -> None:
    """Same index, same bodies: the ACL, freshness and metadata filters are the sync store's."""
    target = index_name("kb", INFO)
    meta = {"model_id": INFO.model_id, "dimension": INFO.dimension, "acls_confirmed_at": {}}
    sync_client, async_client = _Recording(target, meta), _Recording(target, meta)
    sync, aio = _opensearch(sync_client), _async_store(async_client)
    fresh = datetime.now(UTC) - timedelta(hours=1)
    wanted = Eq("source", "handbook")
    kw: dict[str, Any] = {"acl_fresh_after": fresh, "filter": wanted}
    sync.search(VECTOR, PRINCIPALS, 5, **kw)
    sync.search_text("salary", PRINCIPALS, 5, **kw)
    sync.search_hybrid("salary", VECTOR, PRINCIPALS, 5, **kw)

    async def run() -> None:
        await aio.search(VECTOR, PRINCIPALS, 5, **kw)
        await aio.search_text("salary", PRINCIPALS, 5, **kw)
        await aio.search_hybrid("salary", VECTOR, PRINCIPALS, 5, **kw)
        await aio.aclose()

    asyncio.run(run())
    assert async_client.bodies == sync_client.bodies
    assert len(sync_client.bodies) == 3
    assert "handbook" in json.dumps(sync_client.bodies)
