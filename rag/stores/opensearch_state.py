"""Sync state in an OpenSearch index beside the chunks index (``<physical index>-sync``), so a
new index version (a model swap) starts with an empty state of its own."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rag.errors import StoreError
from rag.ids import checked_id
from rag.stores.opensearch_side import SideIndex
from rag.sync.state import DocState

_MAPPING = {
    "mappings": {
        "dynamic": "strict",
        "properties": {
            "source": {"type": "keyword"},
            "document_id": {"type": "keyword"},
            "state": {"type": "keyword", "index": False, "doc_values": False},
        },
    },
}


class OpenSearchSyncState(SideIndex):
    def __init__(self, client: Callable[[], Any], index: Callable[[], str], replicas: int) -> None:
        super().__init__(client, index, replicas, suffix="sync", mappings=_MAPPING["mappings"])

    def load(self, source: str) -> dict[str, DocState]:
        from opensearchpy.helpers import scan

        name = self._name()
        self._client().indices.refresh(index=name)
        hits = scan(
            self._client(), index=name, query={"query": {"term": {"source": source}}}, size=2000
        )
        states = (DocState.model_validate_json(h["_source"]["state"]) for h in hits)
        return {s.document_id: s for s in states}

    def get(self, source: str, document_ids: Sequence[str]) -> dict[str, DocState]:
        if not document_ids:
            return {}
        ids = [checked_id(d) for d in sorted(set(document_ids))]
        response = self._client().mget(index=self._name(), body={"ids": ids}, realtime=True)
        states = (
            DocState.model_validate_json(d["_source"]["state"])
            for d in response["docs"]
            if d.get("found")
        )
        return {s.document_id: s for s in states if s.source == source}

    def put(self, states: Sequence[DocState]) -> None:
        if not states:
            return
        body: list[dict[str, Any]] = []
        for s in states:
            body.append({"index": {"_index": self._name(), "_id": checked_id(s.document_id)}})
            body.append(
                {"source": s.source, "document_id": s.document_id, "state": s.model_dump_json()}
            )
        self._bulk(body)

    def delete(self, source: str, document_ids: Sequence[str]) -> None:
        body = [{"delete": {"_index": self._name(), "_id": checked_id(d)}} for d in document_ids]
        if body:
            self._bulk(body)

    def _bulk(self, body: list[dict[str, Any]]) -> None:
        # No refresh per write (it cost ~0.9 s a call, a quarter of a sync): every read either
        # refreshes first (load) or is a realtime get (get), and the translog makes it durable.
        response = self._client().bulk(body=body)
        failed = [
            i
            for i in response["items"]
            if next(iter(i.values())).get("status", 500) >= 300
            and next(iter(i.values())).get("status") != 404
        ]
        if failed:
            raise StoreError(f"sync state write failed for {len(failed)} documents: {failed[0]}")
