"""The OpenSearch read path on ``opensearchpy.AsyncOpenSearch``, for async retrieval.

Natively async (aiohttp), not the sync client in a thread: each search sends the same request
body as :class:`~rag.stores.opensearch.OpenSearchStore` (the builders of
:mod:`rag.stores.opensearch_dsl`: the ACL filter inside every subquery, the metadata filter
AND-ed with it) and turns the answer into the same hits. Reads only: nothing here writes.

An aiohttp session belongs to the event loop that opened it, so the store keeps one client per
running loop (created on first use there; :meth:`aclose` closes the current loop's).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rag.config import OpenSearchSettings
from rag.embeddings.base import Vectors
from rag.errors import AccessDeniedError, ConfigurationError, IndexNotFoundError, StoreError
from rag.models import Chunk, SearchHit, epoch_ms, from_epoch_ms
from rag.stores.acl_keys import AclKeyOptions, AclKeyState, RegistryRow
from rag.stores.base import IndexInfo, checked_id, require_principals
from rag.stores.counts import CountCache
from rag.stores.fusion import reciprocal_rank_fusion
from rag.stores.limits import MAX_K, checked_k
from rag.stores.opensearch import _UNFILTERED, _from_source, _with_marks
from rag.stores.opensearch_acls import UNKEYED, page_body, page_rows, registry_name, usable
from rag.stores.opensearch_dsl import (
    SOURCE_EXCLUDES,
    Fresh,
    Keys,
    bm25_query,
    compile_acl_filter,
)
from rag.stores.opensearch_plan import DensePlan

if TYPE_CHECKING:
    from rag.filters import Filter

_WATERMARKS = "acls_confirmed_at"  # the index mapping's _meta key OpenSearchStore writes


def fetch_query(
    ids: Sequence[str], principals: AbstractSet[str], fresh: Fresh | None = None, keys: Keys = None
) -> dict[str, Any]:
    """Chunks by id, ACL-filtered in the same bool query (context expansion: a chunk the
    principals may not read is not returned, whoever asked for its id)."""
    values = [checked_id(i) for i in ids]
    return {
        "size": len(values),
        "_source": {"excludes": SOURCE_EXCLUDES},
        "query": {
            "bool": {
                "filter": [
                    {"ids": {"values": values}},
                    compile_acl_filter(principals, fresh, keys),
                ]
            }
        },
    }


def hits_of(response: dict[str, Any], *, dense: bool) -> list[SearchHit]:
    """The hits of a search answer; a k-NN score (lucene reports (1 + cos) / 2) becomes the
    cosine similarity, as every store reports it."""
    return [
        SearchHit(
            chunk=_from_source(h["_source"]),
            score=2.0 * float(h["_score"]) - 1.0 if dense else float(h["_score"]),
        )
        for h in response["hits"]["hits"]
    ]


def chunks_of(response: dict[str, Any], marks: dict[str, datetime]) -> list[Chunk]:
    """The chunks of a :func:`fetch_query` answer, each with its source's ACL watermark."""
    found = [
        SearchHit(chunk=_from_source(h["_source"]), score=0.0) for h in response["hits"]["hits"]
    ]
    return [hit.chunk for hit in _with_marks(found, marks)]


class AsyncOpenSearchStore:
    """Searches of an OpenSearch index on an event loop. Construction does no I/O."""

    def __init__(
        self,
        settings: OpenSearchSettings,
        index: str | None = None,
        client_factory: Callable[[], Any] | None = None,
        acl_keys: AclKeyOptions | None = None,
    ) -> None:
        self._settings = settings
        self._acl_keys = AclKeyState(acl_keys or AclKeyOptions())
        self._explicit_index = index
        self._factory = client_factory or (lambda: make_async_client(settings))
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._index: str | None = None
        self._marks: tuple[float, dict[str, datetime]] | None = None
        self._filters_ready = False
        self._counts = CountCache()  # chunks a search filter admits (the search plan)

    @property
    def client(self) -> Any:
        """The client of the running event loop."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = self._factory()
        return client

    async def aclose(self) -> None:
        """Close the running loop's client (its connection pool)."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()

    async def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from opensearchpy.exceptions import OpenSearchException

        try:
            return await fn(*args, **kwargs)
        except OpenSearchException as exc:
            raise StoreError(f"OpenSearch {what} failed: {exc}") from exc

    # -- the index ---------------------------------------------------------------------------
    async def _alias_target(self) -> str | None:
        from opensearchpy.exceptions import NotFoundError

        try:
            found = await self.client.indices.get_alias(name=self._settings.alias)
        except NotFoundError:
            return None
        except Exception as exc:
            raise StoreError(f"OpenSearch get alias failed: {exc}") from exc
        names = sorted(found)
        if len(names) != 1:
            raise StoreError(f"alias {self._settings.alias} points at {names}; expected one")
        return str(names[0])

    async def _exists(self, index: str) -> bool:
        return bool(await self._call("exists", self.client.indices.exists, index=index))

    async def _meta(self, index: str) -> dict[str, Any]:
        mapping = await self._call("get mapping", self.client.indices.get_mapping, index=index)
        return dict(next(iter(mapping.values()))["mappings"].get("_meta") or {})

    async def index_info(self) -> IndexInfo | None:
        """What the index was built with; None when there is none (no side effects)."""
        target = self._explicit_index or await self._alias_target()
        if target is None or not await self._exists(target):
            return None
        meta = await self._meta(target)
        if "model_id" not in meta:
            raise StoreError(f"index {target} has no model in its _meta; not ours")
        return IndexInfo(model_id=meta["model_id"], dimension=int(meta["dimension"]))

    async def _read_target(self) -> str:
        """The physical index to search, found without creating anything."""
        if self._index is not None:
            return self._index
        target = self._explicit_index or await self._alias_target()
        if target is None or not await self._exists(target):
            where = f"index {target}" if target else f"alias {self._settings.alias}"
            raise IndexNotFoundError(
                f"nothing ingested at OpenSearch {where}: run rag ingest first"
            )
        self._index = target
        return target

    async def count(self) -> int:
        result = await self._call("count", self.client.count, index=await self._read_target())
        return int(result["count"])

    async def acl_watermarks(self) -> dict[str, datetime]:
        """Each source's ACL watermark; cached for a second (older only hides more)."""
        now = time.monotonic()
        if self._marks is not None and now - self._marks[0] < 1.0:
            return self._marks[1]
        raw = (await self._meta(await self._read_target())).get(_WATERMARKS) or {}
        marks = {s: from_epoch_ms(int(v)) for s, v in raw.items()}
        self._marks = (now, {s: at for s, at in marks.items() if at is not None})
        return self._marks[1]

    async def _planned(self, index: str, plan: DensePlan) -> DensePlan:
        """``plan`` with the counts it needs (:class:`DensePlan`: exact or the graph)."""
        for key, body in plan.missing():
            plan.counted(key, await self._call("count", self.client.count, index=index, body=body))
        return plan

    async def _filterable(self, filter: Filter | None) -> str:
        """The index to search; with a filter, one whose every chunk has its filter fields
        (as :class:`OpenSearchStore` checks: an older index is refused, not half-searched)."""
        index = await self._read_target()
        if filter is None or self._filters_ready:
            return index
        body = {"query": _UNFILTERED}
        missing = (await self._call("count", self.client.count, index=index, body=body))["count"]
        if missing:
            raise StoreError(
                f"the index {index} predates metadata filters ({missing} chunks without filter "
                "fields): run rag ingest once (it adds them) before filtering"
            )
        self._filters_ready = True
        return index

    async def _keys(self, index: str, principals: AbstractSet[str]) -> Keys:
        """The ACL keys ``principals`` may read when the search should filter by them (as
        :meth:`OpenSearchStore._keys`); None: filter by principals."""
        state = self._acl_keys
        if not state.wanted(principals) or not await state.aready(lambda: self._keyed(index)):
            return None
        registry = registry_name(index)

        async def generation() -> int:
            return int((await self._call("count", self.client.count, index=registry))["count"])

        async def rows() -> list[RegistryRow]:
            found: list[RegistryRow] = []
            after: str | None = None
            while True:
                body = page_body(after)
                page = await self._call("search", self.client.search, index=registry, body=body)
                rows, after = page_rows(page)
                found.extend(rows)
                if after is None:
                    return found

        return usable(await state.cache.akeys(principals, generation, rows))

    async def _keyed(self, index: str) -> bool:
        """Every chunk has its ACL key and the registry exists."""
        if not await self._exists(registry_name(index)):
            return False
        body = {"query": UNKEYED}
        return not (await self._call("count", self.client.count, index=index, body=body))["count"]

    async def _freshness(self, after: datetime | None) -> tuple[Fresh | None, dict[str, datetime]]:
        marks = await self.acl_watermarks()
        if after is None:
            return None, marks
        since = epoch_ms(after)
        return (since, [s for s, at in marks.items() if epoch_ms(at) >= since]), marks

    # -- reads -------------------------------------------------------------------------------
    async def search(
        self,
        vector: Vectors,
        principals: AbstractSet[str],
        k: int,
        *,
        filter: Filter | None = None,
        acl_fresh_after: datetime | None = None,
    ) -> list[SearchHit]:
        """The ``k`` nearest chunks ``principals`` may read (k-NN, ACL filter inside)."""
        if not principals:
            raise AccessDeniedError("search without principals is refused")
        k = checked_k(k)
        index = await self._filterable(filter)
        fresh, marks = await self._freshness(acl_fresh_after)
        keys = await self._keys(index, principals)
        plan = DensePlan(self._settings, self._counts, index, principals, fresh, filter, keys)
        body = (await self._planned(index, plan)).body(vector, k)
        response = await self._call("search", self.client.search, index=index, body=body)
        return _with_marks(hits_of(response, dense=True), marks)

    async def search_text(
        self,
        text: str,
        principals: AbstractSet[str],
        k: int,
        *,
        filter: Filter | None = None,
        acl_fresh_after: datetime | None = None,
    ) -> list[SearchHit]:
        """BM25 over chunk text, ACL-filtered in the query."""
        require_principals(principals)
        k = checked_k(k)
        index = await self._filterable(filter)
        fresh, marks = await self._freshness(acl_fresh_after)
        keys = await self._keys(index, principals)
        body = bm25_query(text, principals, k, fresh, filter, keys)
        response = await self._call("search", self.client.search, index=index, body=body)
        return _with_marks(hits_of(response, dense=False), marks)

    async def search_hybrid(
        self,
        text: str,
        vector: Vectors,
        principals: AbstractSet[str],
        k: int,
        *,
        filter: Filter | None = None,
        acl_fresh_after: datetime | None = None,
    ) -> list[SearchHit]:
        """BM25 and k-NN in one _msearch, both ACL-filtered, fused by reciprocal rank."""
        require_principals(principals)
        depth = max(checked_k(k), 50)
        index = await self._filterable(filter)
        fresh, marks = await self._freshness(acl_fresh_after)
        keys = await self._keys(index, principals)
        plan = DensePlan(self._settings, self._counts, index, principals, fresh, filter, keys)
        bodies: list[dict[str, Any]] = [
            {"index": index},
            bm25_query(text, principals, depth, fresh, filter, keys),
            {"index": index},
            (await self._planned(index, plan)).body(vector, depth),
        ]
        result = await self._call("msearch", self.client.msearch, body=bodies)
        rankings = []
        for response, dense in zip(result["responses"], (False, True), strict=True):
            if "error" in response:
                raise StoreError(f"OpenSearch hybrid subquery failed: {response['error']}")
            rankings.append(hits_of(response, dense=dense))
        return _with_marks(reciprocal_rank_fusion(rankings, k, self._settings.rrf_k), marks)

    async def fetch_chunks(
        self,
        ids: Sequence[str],
        principals: AbstractSet[str],
        *,
        acl_fresh_after: datetime | None = None,
    ) -> list[Chunk]:
        """The chunks of ``ids`` that ``principals`` may read (ACL filter in the query)."""
        require_principals(principals)
        if not ids:
            return []
        if len(ids) > MAX_K:
            raise StoreError(f"at most {MAX_K} chunks per fetch, got {len(ids)}")
        index = await self._read_target()
        fresh, marks = await self._freshness(acl_fresh_after)
        body = fetch_query(ids, principals, fresh, await self._keys(index, principals))
        response = await self._call("search", self.client.search, index=index, body=body)
        return chunks_of(response, marks)


def make_async_client(settings: OpenSearchSettings) -> Any:
    """An ``AsyncOpenSearch`` client with the sync store's connection settings."""
    from opensearchpy import AsyncOpenSearch

    kwargs: dict[str, Any] = {
        "hosts": settings.hosts,
        "timeout": settings.timeout_seconds,
        "verify_certs": settings.verify_certs,
        "max_retries": 0,
        "retry_on_timeout": False,
    }
    if settings.ca_certs is not None:
        kwargs["ca_certs"] = str(settings.ca_certs)
    if settings.aws_sigv4:
        import boto3
        from opensearchpy import AsyncHttpConnection, AWSV4SignerAsyncAuth

        credentials = boto3.Session().get_credentials()
        if credentials is None or not settings.aws_region:
            raise ConfigurationError("SigV4 needs AWS credentials and opensearch.aws_region")
        kwargs["http_auth"] = AWSV4SignerAsyncAuth(
            credentials, settings.aws_region, settings.aws_service
        )
        kwargs["connection_class"] = AsyncHttpConnection
    elif settings.username is not None:
        password = settings.password.get_secret_value() if settings.password else ""
        kwargs["http_auth"] = (settings.username, password)
    return AsyncOpenSearch(**kwargs)
