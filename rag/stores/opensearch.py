"""OpenSearch as the production store: k-NN (lucene HNSW, cosine) with the ACL filter inside the
k-NN clause, BM25 with the same filter, hybrid by reciprocal rank fusion, resilient bulk loading,
and index versions behind an alias for zero-downtime model swaps.

Index layout: the alias (``settings.alias``) points at one physical index named
``<alias>--<hash of model, dimension and mapping version>``. A new model builds its own index
beside the live one (``OpenSearchStore(settings, index=...)``); :meth:`promote` switches the
alias atomically.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Collection, Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from rag.config import OpenSearchSettings
from rag.embeddings.base import Vectors
from rag.errors import AccessDeniedError, ConfigurationError, IndexNotFoundError, StoreError
from rag.filters import Filter, filter_view
from rag.models import Acl, Chunk, Citation, SearchHit, epoch_ms, from_epoch_ms, stable_hash
from rag.stores.acl_keys import ACL_KEY, AclKeyOptions, AclKeyState, acl_key, chunk_acls
from rag.stores.base import (
    DeadLetter,
    IndexInfo,
    check_compatible,
    checked_id,
    require_principals,
)
from rag.stores.counts import CountCache
from rag.stores.fusion import reciprocal_rank_fusion
from rag.stores.limits import checked_k
from rag.stores.opensearch_acls import (
    UNKEYED,
    OpenSearchAclRegistry,
    Retry,
    key_update,
    read_registry,
    registry_name,
    usable,
)
from rag.stores.opensearch_dsl import (
    ALLOW,
    CHECKED,
    DENY,
    FILTER_MAPPING,
    FILTERS_VERSION,
    Fresh,
    Keys,
    bm25_query,
    filter_fields,
    index_body,
)
from rag.stores.opensearch_plan import DensePlan

if TYPE_CHECKING:
    from rag.stores.opensearch_runs import OpenSearchRunLog
    from rag.stores.opensearch_state import OpenSearchSyncState

log = logging.getLogger(__name__)

_REJECTED = 429  # the status streaming_bulk retries
_UNAVAILABLE = frozenset({502, 503, 504})  # retried as if 429
_MAPPING_VERSION = "3"  # 2: language analyzer on the BM25 text field; 3: filter fields
_UNFILTERED = {"bool": {"must_not": [{"exists": {"field": FILTERS_VERSION}}]}}
_WATERMARKS = "acls_confirmed_at"


@dataclass(frozen=True)
class _Op:
    action: Literal["index", "delete", "update"]
    chunk_id: str
    document_id: str
    body: dict[str, Any] | None


def index_name(alias: str, info: IndexInfo) -> str:
    """The physical index of one (model, dimension, mapping) version of ``alias``."""
    return (
        f"{alias}--{stable_hash(info.model_id, str(info.dimension), _MAPPING_VERSION, length=12)}"
    )


class OpenSearchStore:
    """A VectorStore on OpenSearch. Construction does no I/O; the client is created lazily."""

    def __init__(
        self,
        settings: OpenSearchSettings,
        index: str | None = None,
        client: Any = None,
        acl_keys: AclKeyOptions | None = None,
    ) -> None:
        self._settings = settings
        self._acl_keys = AclKeyState(acl_keys or AclKeyOptions())
        self._explicit_index = index
        self._client = client
        self._index: str | None = None
        self._info: IndexInfo | None = None
        self._dead_letters: list[DeadLetter] = []
        self._marks: tuple[float, dict[str, datetime]] | None = None
        self._filters_ready = False  # every chunk has its filter fields (checked when needed)
        self._counts = CountCache()  # chunks a search filter admits (the search plan)

    # -- client ------------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = _make_client(self._settings)
        return self._client

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from opensearchpy.exceptions import OpenSearchException

        try:
            return fn(*args, **kwargs)
        except OpenSearchException as exc:
            raise StoreError(f"OpenSearch {what} failed: {exc}") from exc

    # -- index lifecycle ---------------------------------------------------------------------
    def ensure_index(self, info: IndexInfo) -> None:
        target = self._explicit_index or self._alias_target()
        if target is None:
            target = index_name(self._settings.alias, info)
            self._create(target, info)
            self.promote(target)
        elif not self._call("exists", self.client.indices.exists, index=target):
            self._create(target, info)
        else:
            check_compatible(self._read_info(target), info)
            # indexes made before ACL check times (0 = never checked) or filter fields
            self._call(
                "put mapping",
                self.client.indices.put_mapping,
                index=target,
                body={
                    "properties": {
                        CHECKED: {"type": "long"},
                        ACL_KEY: {"type": "keyword"},
                        **FILTER_MAPPING,
                    }
                },
            )
            self._index, self._info = target, info
            self._backfill_filter_fields()
            self._backfill_acl_keys()
        self._index, self._info = target, info

    def _backfill_filter_fields(self) -> None:
        """Give chunks written before metadata filters their filter fields (partial updates
        computed from each chunk's citation and metadata; ACLs and vectors are not touched)."""
        from opensearchpy.helpers import scan

        index = self._target()
        self.refresh()
        hits = scan(
            self.client,
            index=index,
            query={"query": _UNFILTERED, "_source": {"excludes": ["vector"]}},
            size=1000,
        )
        ops: list[_Op] = []
        try:
            for hit in hits:
                chunk = _from_source(hit["_source"])
                doc = filter_fields(filter_view(chunk))
                ops.append(_Op("update", chunk.id, chunk.document_id, {"doc": doc}))
        except Exception as exc:
            raise StoreError(f"OpenSearch filter field backfill failed: {exc}") from exc
        if ops:
            log.info("backfilling the filter fields of %d chunks", len(ops))
            self._bulk(ops)
            self.refresh()
        self._filters_ready = True

    def _backfill_acl_keys(self) -> None:
        """Key the chunks written before ACL keys (their ACLs registered first), each by a
        scripted update that applies only if the chunk's ACL is still the one read."""
        from opensearchpy.helpers import scan

        self.refresh()
        hits = scan(
            self.client,
            index=self._target(),
            query={"query": UNKEYED, "_source": {"includes": ["document_id", ALLOW, DENY]}},
            size=1000,
        )
        acls: dict[str, Acl] = {}
        ops: list[_Op] = []
        try:
            for hit in hits:
                acl, update = key_update(hit["_source"])
                acls[acl_key(acl)] = acl
                ops.append(_Op("update", hit["_id"], hit["_source"].get("document_id", ""), update))
        except Exception as exc:
            raise StoreError(f"OpenSearch ACL key backfill failed: {exc}") from exc
        if ops:
            log.info("backfilling the ACL keys of %d chunks", len(ops))
            self._register(acls)
            self._bulk(ops)
            self.refresh()
        self._acl_keys.reset()

    def _create(self, index: str, info: IndexInfo) -> None:
        s = self._settings
        body = index_body(
            info.dimension,
            info.model_id,
            shards=s.shards,
            replicas=s.replicas,
            m=s.hnsw_m,
            ef_construction=s.hnsw_ef_construction,
            text_analyzer=s.text_analyzer,
        )
        from opensearchpy.exceptions import RequestError

        try:
            self.client.indices.create(index=index, body=body)
        except RequestError as exc:
            if "resource_already_exists" not in str(exc):
                raise StoreError(f"OpenSearch create index failed: {exc}") from exc

    def _alias_target(self) -> str | None:
        from opensearchpy.exceptions import NotFoundError

        try:
            found = self.client.indices.get_alias(name=self._settings.alias)
        except NotFoundError:
            return None
        except Exception as exc:
            raise StoreError(f"OpenSearch get alias failed: {exc}") from exc
        names = sorted(found)
        if len(names) != 1:
            raise StoreError(f"alias {self._settings.alias} points at {names}; expected one")
        return str(names[0])

    def _read_info(self, index: str) -> IndexInfo:
        mapping = self._call("get mapping", self.client.indices.get_mapping, index=index)
        meta = mapping[index]["mappings"].get("_meta", {})
        if "model_id" not in meta:
            raise StoreError(f"index {index} has no model in its _meta; not ours")
        return IndexInfo(model_id=meta["model_id"], dimension=int(meta["dimension"]))

    def index_info(self) -> IndexInfo | None:
        target = self._explicit_index or self._alias_target()
        if target is None or not self._call("exists", self.client.indices.exists, index=target):
            return None
        return self._read_info(target)

    def promote(self, index: str) -> None:
        """Point the alias at ``index`` in one atomic step (the old index stays for rollback)."""
        actions: list[dict[str, Any]] = [{"add": {"index": index, "alias": self._settings.alias}}]
        current = self._alias_target()
        if current == index:
            return
        if current is not None:
            actions.insert(0, {"remove": {"index": current, "alias": self._settings.alias}})
        self._call("alias switch", self.client.indices.update_aliases, body={"actions": actions})

    def _read_target(self) -> str:
        """The physical index to search, found without creating anything (no index, no alias):
        reads never write. Nothing ingested is an :class:`IndexNotFoundError`."""
        if self._index is not None:
            return self._index
        target = self._explicit_index or self._alias_target()
        if target is None or not self._call("exists", self.client.indices.exists, index=target):
            where = f"index {target}" if target else f"alias {self._settings.alias}"
            raise IndexNotFoundError(
                f"nothing ingested at OpenSearch {where}: run rag ingest first"
            )
        self._info = self._read_info(target)
        self._index = target
        return target

    def _target(self) -> str:
        """The physical index for a write (an existing index is opened as by ensure_index)."""
        if self._index is None:
            info = self.index_info()
            if info is None:
                raise StoreError(f"no index behind alias {self._settings.alias}: ingest first")
            self.ensure_index(info)
        assert self._index is not None
        return self._index

    # -- writes ------------------------------------------------------------------------------
    def upsert(self, chunks: Sequence[Chunk], vectors: Vectors) -> None:
        if not chunks:
            return
        if vectors.shape[0] != len(chunks):
            raise StoreError(f"{len(chunks)} chunks but {vectors.shape[0]} vectors")
        self._register(chunk_acls(chunks))  # before the chunks that reference them
        self._bulk(
            [
                _Op("index", c.id, c.document_id, _to_source(c, vectors[i]))
                for i, c in enumerate(chunks)
            ]
        )

    def delete_document(self, document_id: str, keep: Collection[str] = ()) -> None:
        stale = [cid for cid in self._ids_of(document_id) if cid not in keep]
        self._bulk([_Op("delete", cid, document_id, None) for cid in stale])

    def update_acl(self, document_id: str, acl: Acl) -> int:
        """Replace the ACL of every chunk of a document, without re-embedding; returns chunks.
        The ACL key is written in the same partial update (its registry row first)."""
        key = acl_key(acl)
        doc = {ALLOW: sorted(acl.allow), DENY: sorted(acl.deny), ACL_KEY: key}
        ids = self._ids_of(document_id)
        if ids:
            self._register({key: acl})
        self._bulk([_Op("update", cid, document_id, {"doc": doc}) for cid in ids])
        return len(ids)

    def acl_registry(self) -> OpenSearchAclRegistry:
        """The distinct ACLs of this index, by key (a side index)."""
        return OpenSearchAclRegistry(lambda: self.client, self._target, self._settings.replicas)

    def _register(self, acls: dict[str, Acl]) -> None:
        new = self._acl_keys.unregistered(acls)
        if new:
            s = self._settings
            retry = Retry(
                s.max_retries, s.backoff_seconds, s.backoff_max_seconds, _RetryUnavailable
            )
            self.acl_registry().register(new, retry)
            self._acl_keys.registered(new)

    def confirm_acls(self, source: str, at: datetime) -> None:
        """The source's ACL watermark, kept in the index mapping's ``_meta`` (read, merged and
        written back: a lost race leaves an older watermark, which only hides more)."""
        index = self._target()
        meta = self._meta(index)
        marks = dict(meta.get(_WATERMARKS) or {})
        marks[source] = max(int(marks.get(source) or 0), epoch_ms(at))
        body = {"_meta": {**meta, _WATERMARKS: marks}}
        self._call("put mapping", self.client.indices.put_mapping, index=index, body=body)
        self._marks = None

    def _meta(self, index: str) -> dict[str, Any]:
        mapping = self._call("get mapping", self.client.indices.get_mapping, index=index)
        return dict(next(iter(mapping.values()))["mappings"].get("_meta") or {})

    def acl_watermarks(self) -> dict[str, datetime]:
        """Read-only; cached for a second (a stale answer is only ever older: fail closed)."""
        now = time.monotonic()
        if self._marks is not None and now - self._marks[0] < 1.0:
            return self._marks[1]
        raw = self._meta(self._read_target()).get(_WATERMARKS) or {}
        marks = {s: from_epoch_ms(int(v)) for s, v in raw.items()}
        self._marks = (now, {s: at for s, at in marks.items() if at is not None})
        return self._marks[1]

    def oldest_acl_check(self, source: str) -> datetime | None:
        """The oldest ACL confirmation among the source's chunks (None: none, or never)."""
        body = {
            "size": 0,
            "query": {"term": {"source": source}},
            "aggs": {
                "oldest": {"min": {"field": CHECKED}},
                "unknown": {"missing": {"field": CHECKED}},
            },
        }
        result = self._call("search", self.client.search, index=self._target(), body=body)
        aggs = result["aggregations"]
        if result["hits"]["total"]["value"] == 0:
            return None
        oldest = 0 if aggs["unknown"]["doc_count"] else int(aggs["oldest"]["value"] or 0)
        return from_epoch_ms(max(oldest, epoch_ms(self.acl_watermarks().get(source))))

    def _ids_of(self, document_id: str) -> list[str]:
        """Chunk ids of one document (search_after paging: works on Serverless too)."""
        ids: list[str] = []
        body: dict[str, Any] = {
            "query": {"term": {"document_id": checked_id(document_id)}},
            "_source": False,
            "size": 1000,
            "sort": [{"chunk_id": "asc"}],
        }
        while True:
            response = self._call("search", self.client.search, index=self._target(), body=body)
            hits = response["hits"]["hits"]
            ids.extend(h["_id"] for h in hits)
            if len(hits) < body["size"]:
                return ids
            body["search_after"] = hits[-1]["sort"]

    def _bulk(self, ops: Sequence[_Op]) -> None:
        index = self._target()
        size = self._settings.bulk_batch
        for start in range(0, len(ops), size):
            self._send(index, ops[start : start + size])

    def _send(self, index: str, ops: Sequence[_Op]) -> None:
        """One batch through ``streaming_bulk``, which resends only the items (or the whole
        request) rejected as temporary, with exponential backoff, at most ``max_retries`` times.
        Items rejected for good are dead letters; a spent budget or a failed request is a
        :class:`StoreError` (after the batch's dead letters are recorded)."""
        from opensearchpy.exceptions import TransportError
        from opensearchpy.helpers import streaming_bulk

        s = self._settings
        documents = {op.chunk_id: op.document_id for op in ops}
        failures = streaming_bulk(
            _RetryUnavailable(self.client),
            [_action(index, op) for op in ops],
            chunk_size=len(ops),
            raise_on_error=False,  # failed items are yielded: dead letters
            raise_on_exception=True,  # a failed request (after its retries) is raised
            max_retries=s.max_retries,
            # seconds; typed int there, but fractions work (they only reach time.sleep)
            initial_backoff=s.backoff_seconds,  # type: ignore[arg-type]
            max_backoff=s.backoff_max_seconds,  # type: ignore[arg-type]
            yield_ok=False,
            refresh=s.refresh,
        )
        spent = 0
        try:
            for _, failure in failures:
                action, result = next(iter(failure.items()))
                status = int(result.get("status", 500))
                if action == "delete" and status == 404:
                    continue
                if status == _REJECTED:  # still rejected on the last attempt
                    spent += 1
                    continue
                chunk_id = str(result.get("_id"))
                error = json.dumps(result.get("error", {}))[:500]
                self._dead_letters.append(
                    DeadLetter(chunk_id, documents.get(chunk_id, ""), status, error)
                )
                log.error("dead letter %s (%s): %s", chunk_id, status, error)
        except TransportError as exc:
            if exc.status_code == _REJECTED:
                raise StoreError(
                    f"bulk retry budget spent: the request was still rejected after "
                    f"{s.max_retries} retries: {exc}"
                ) from exc
            raise StoreError(f"OpenSearch bulk failed: {exc}") from exc
        if spent:
            raise StoreError(
                f"bulk retry budget spent: {spent} items still rejected after "
                f"{s.max_retries} retries"
            )

    @property
    def dead_letters(self) -> list[DeadLetter]:
        return self._dead_letters

    def refresh(self) -> None:
        """Make every write so far visible to search."""
        self._call("refresh", self.client.indices.refresh, index=self._target())

    def optimize(self) -> None:
        """Called once at the end of an ingestion: make every write visible."""
        self.refresh()

    def run_log(self) -> OpenSearchRunLog:
        """Sync run records in an index beside this store's physical index."""
        from rag.stores.opensearch_runs import OpenSearchRunLog

        return OpenSearchRunLog(lambda: self.client, self._target, self._settings.replicas)

    def sync_state(self) -> OpenSearchSyncState:
        """The sync state index beside this store's physical index."""
        from rag.stores.opensearch_state import OpenSearchSyncState

        return OpenSearchSyncState(lambda: self.client, self._target, self._settings.replicas)

    # -- reads -------------------------------------------------------------------------------
    def search(
        self,
        vector: Vectors,
        principals: AbstractSet[str],
        k: int,
        *,
        acl_fresh_after: datetime | None = None,
        filter: Filter | None = None,
    ) -> list[SearchHit]:
        if not principals:
            raise AccessDeniedError("search without principals is refused")
        k = checked_k(k)
        index = self._filterable(filter)
        fresh, marks = self._freshness(acl_fresh_after)
        keys = self._keys(index, principals)
        plan = DensePlan(self._settings, self._counts, index, principals, fresh, filter, keys)
        body = self._planned(index, plan).body(vector, k)
        response = self._call("search", self.client.search, index=index, body=body)
        return _with_marks(self._hits(response, dense=True), marks)

    def search_text(
        self,
        text: str,
        principals: AbstractSet[str],
        k: int,
        *,
        acl_fresh_after: datetime | None = None,
        filter: Filter | None = None,
    ) -> list[SearchHit]:
        """BM25 over chunk text, ACL-filtered (and metadata-filtered) in the query."""
        require_principals(principals)
        k = checked_k(k)
        index = self._filterable(filter)
        fresh, marks = self._freshness(acl_fresh_after)
        body = bm25_query(text, principals, k, fresh, filter, self._keys(index, principals))
        response = self._call("search", self.client.search, index=index, body=body)
        return _with_marks(self._hits(response, dense=False), marks)

    def search_hybrid(
        self,
        text: str,
        vector: Vectors,
        principals: AbstractSet[str],
        k: int,
        *,
        acl_fresh_after: datetime | None = None,
        filter: Filter | None = None,
    ) -> list[SearchHit]:
        """BM25 and k-NN in one _msearch, both ACL-filtered, fused by reciprocal rank."""
        require_principals(principals)
        depth = max(checked_k(k), 50)
        index = self._filterable(filter)
        fresh, marks = self._freshness(acl_fresh_after)
        keys = self._keys(index, principals)
        plan = DensePlan(self._settings, self._counts, index, principals, fresh, filter, keys)
        bodies: list[dict[str, Any]] = [
            {"index": index},
            bm25_query(text, principals, depth, fresh, filter, keys),
            {"index": index},
            self._planned(index, plan).body(vector, depth),
        ]
        result = self._call("msearch", self.client.msearch, body=bodies)
        rankings = []
        for response, dense in zip(result["responses"], (False, True), strict=True):
            if "error" in response:
                raise StoreError(f"OpenSearch hybrid subquery failed: {response['error']}")
            rankings.append(self._hits(response, dense=dense))
        return _with_marks(reciprocal_rank_fusion(rankings, k, self._settings.rrf_k), marks)

    def _planned(self, index: str, plan: DensePlan) -> DensePlan:
        """``plan`` with the counts it needs (:class:`DensePlan`: exact or the graph)."""
        for key, body in plan.missing():
            plan.counted(key, self._call("count", self.client.count, index=index, body=body))
        return plan

    def _filterable(self, filter: Filter | None) -> str:
        """The index to search; with a filter, one whose every chunk has its filter fields: an
        index made before them (not yet backfilled by a writer) is refused with what to do,
        rather than silently missing chunks."""
        index = self._read_target()
        if filter is None or self._filters_ready:
            return index
        body = {"query": _UNFILTERED}
        missing = self._call("count", self.client.count, index=index, body=body)["count"]
        if missing:
            raise StoreError(
                f"the index {index} predates metadata filters ({missing} chunks without filter "
                "fields): run rag ingest once (it adds them) before filtering"
            )
        self._filters_ready = True
        return index

    def _keys(self, index: str, principals: AbstractSet[str]) -> Keys:
        """The ACL keys ``principals`` may read, when the search should filter by them (enough
        principals, every chunk keyed: see :class:`AclKeyState`); None: by principals."""
        state = self._acl_keys
        if not state.wanted(principals) or not state.ready(lambda: self._keyed(index)):
            return None
        registry = registry_name(index)

        def generation() -> int:
            return int(self._call("count", self.client.count, index=registry)["count"])

        def search(body: dict[str, Any]) -> dict[str, Any]:
            return dict(self._call("search", self.client.search, index=registry, body=body))

        return usable(state.cache.keys(principals, generation, lambda: read_registry(search)))

    def _keyed(self, index: str) -> bool:
        """Every chunk has its ACL key and the registry exists."""
        if not self._call("exists", self.client.indices.exists, index=registry_name(index)):
            return False
        body = {"query": UNKEYED}
        return not self._call("count", self.client.count, index=index, body=body)["count"]

    def _freshness(self, after: datetime | None) -> tuple[Fresh | None, dict[str, datetime]]:
        marks = self.acl_watermarks()
        if after is None:
            return None, marks
        since = epoch_ms(after)
        return (since, [s for s, at in marks.items() if epoch_ms(at) >= since]), marks

    # the lucene engine scores cosinesimil as (1 + cos) / 2; we report cos, like every store
    def _hits(self, response: dict[str, Any], *, dense: bool) -> list[SearchHit]:
        return [
            SearchHit(
                chunk=_from_source(h["_source"]),
                score=2.0 * float(h["_score"]) - 1.0 if dense else float(h["_score"]),
            )
            for h in response["hits"]["hits"]
        ]

    def count(self) -> int:
        result = self._call("count", self.client.count, index=self._read_target())
        return int(result["count"])

    def chunk_ids(self) -> set[str]:
        """Every chunk id in the index (audits and tests); scrolls through all of them."""
        return set(self._scan_ids())

    def _scan_ids(self) -> Iterator[str]:
        from opensearchpy.helpers import scan

        index = self._read_target()
        for hit in scan(self.client, index=index, query={"_source": False}, size=2000):
            yield hit["_id"]


def _action(index: str, op: _Op) -> dict[str, Any]:
    """One bulk action as ``streaming_bulk`` takes it."""
    action: dict[str, Any] = {"_op_type": op.action, "_index": index, "_id": op.chunk_id}
    if op.body is not None:
        action["_source"] = op.body
    return action


class _RetryUnavailable:
    """The client as ``streaming_bulk`` sees it. That helper retries only 429s (an item, or
    the whole request); an item or a request answered 502/503/504, or a lost connection, is as
    temporary, so it is handed over as a 429: every temporary failure shares one budget and
    one backoff, as the store promises. Bulk actions are idempotent (index, update and delete
    by ``_id``), so resending one whose answer was lost duplicates nothing."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.transport = client.transport  # streaming_bulk serializes with it

    def bulk(self, *args: Any, **kwargs: Any) -> Any:
        from opensearchpy.exceptions import ConnectionError as OSConnectionError
        from opensearchpy.exceptions import TransportError

        try:
            response = self._client.bulk(*args, **kwargs)
        except TransportError as exc:
            if not isinstance(exc, OSConnectionError) and exc.status_code not in _UNAVAILABLE:
                raise
            log.warning("bulk request failed (%s); retrying it", exc)
            raise TransportError(_REJECTED, f"temporary: {exc}", exc) from exc
        rejected = 0
        for item in response["items"]:
            result = next(iter(item.values()))
            if result.get("status") in _UNAVAILABLE:
                result["status"] = _REJECTED
            rejected += result.get("status") == _REJECTED
        if rejected:
            log.info("%d bulk items rejected as temporary; retrying them", rejected)
        return response


def _to_source(chunk: Chunk, vector: Any) -> dict[str, Any]:
    return {
        "chunk_id": checked_id(chunk.id),
        "document_id": checked_id(chunk.document_id),
        "source": chunk.source,
        "ordinal": chunk.ordinal,
        "text": chunk.text,
        "token_count": chunk.token_count,
        ALLOW: sorted(chunk.acl.allow),
        DENY: sorted(chunk.acl.deny),
        CHECKED: epoch_ms(chunk.acl_checked_at),
        ACL_KEY: acl_key(chunk.acl),
        "citation": chunk.citation.model_dump(mode="json"),
        "metadata": chunk.metadata,
        "vector": vector.tolist(),  # the same floats as float(x) each, in C
        **filter_fields(filter_view(chunk)),
    }


def _from_source(source: dict[str, Any]) -> Chunk:
    return Chunk(
        id=source["chunk_id"],
        document_id=source["document_id"],
        source=source["source"],
        ordinal=source["ordinal"],
        text=source["text"],
        token_count=source["token_count"],
        acl=Acl(allow=frozenset(source[ALLOW]), deny=frozenset(source[DENY])),
        citation=Citation.model_validate(source["citation"]),
        metadata=source["metadata"],
        acl_checked_at=from_epoch_ms(source.get(CHECKED)),
    )


def _with_marks(hits: list[SearchHit], marks: dict[str, datetime]) -> list[SearchHit]:
    """Each chunk's ACL check time: the later of its write and its source's watermark."""
    out = []
    for hit in hits:
        mark, own = marks.get(hit.chunk.source), hit.chunk.acl_checked_at
        if mark is not None and (own is None or own < mark):
            hit = hit.model_copy(
                update={"chunk": hit.chunk.model_copy(update={"acl_checked_at": mark})}
            )
        out.append(hit)
    return out


def _make_client(settings: OpenSearchSettings) -> Any:
    from opensearchpy import OpenSearch

    kwargs: dict[str, Any] = {
        "hosts": settings.hosts,
        "timeout": settings.timeout_seconds,
        "verify_certs": settings.verify_certs,
        # A request that cannot reach a node (connection refused or reset) moves on to the next
        # host, which marks the dead one for a while: a cluster that loses a node keeps serving.
        # Status codes are not retried here: bulk items are retried one by one (streaming_bulk)
        # and a timed-out request may still run, so neither is re-sent blindly.
        "max_retries": max(0, len(settings.hosts) - 1),
        "retry_on_status": (),
        "retry_on_timeout": False,
    }
    if settings.ca_certs is not None:
        kwargs["ca_certs"] = str(settings.ca_certs)
    if settings.aws_sigv4:
        import boto3
        from opensearchpy import Urllib3AWSV4SignerAuth

        credentials = boto3.Session().get_credentials()
        if credentials is None or not settings.aws_region:
            raise ConfigurationError("SigV4 needs AWS credentials and opensearch.aws_region")
        kwargs["http_auth"] = Urllib3AWSV4SignerAuth(
            credentials, settings.aws_region, settings.aws_service
        )
    elif settings.username is not None:
        password = settings.password.get_secret_value() if settings.password else ""
        kwargs["http_auth"] = (settings.username, password)
    return OpenSearch(**kwargs)
