"""Run records in an OpenSearch index beside the chunks index (``<physical index>-runs``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rag.errors import StoreError
from rag.stores.opensearch_side import SideIndex
from rag.sync.runs import BatchRecord, RunRecord, batch_key, run_key

_KEYWORD = {"type": "keyword"}
_MAPPING = {
    "dynamic": "strict",
    "properties": {
        "run_id": _KEYWORD,
        "kind": _KEYWORD,
        "source": _KEYWORD,
        "at": _KEYWORD,
        "value": {"type": "keyword", "index": False, "doc_values": False},
    },
}


class OpenSearchRunLog(SideIndex):
    def __init__(self, client: Callable[[], Any], index: Callable[[], str], replicas: int) -> None:
        super().__init__(client, index, replicas, suffix="runs", mappings=_MAPPING)

    def _put(self, docs: list[tuple[str, dict[str, str]]]) -> None:
        from opensearchpy.exceptions import OpenSearchException

        if not docs:
            return
        body: list[dict[str, Any]] = []
        for key, doc in docs:
            body += [{"index": {"_index": self._name(), "_id": key}}, doc]
        try:
            # no refresh: reads by id are real-time, and a search refreshes first (_search)
            response = self._client().bulk(body=body)
        except OpenSearchException as exc:
            raise StoreError(f"sync run record write failed: {exc}") from exc
        if response.get("errors"):
            raise StoreError(f"sync run record write failed: {response['items'][0]}")

    def _get(self, key: str, what: str) -> str:
        from opensearchpy.exceptions import NotFoundError

        try:
            found = self._client().get(index=self._name(), id=key)
        except NotFoundError:
            raise StoreError(f"no {what}") from None
        return str(found["_source"]["value"])

    def _search(self, filters: list[dict[str, Any]], sort: str, size: int) -> list[str]:
        body = {"size": size, "query": {"bool": {"filter": filters}}, "sort": [{"at": sort}]}
        self._client().indices.refresh(index=self._name())  # see every record written so far
        response = self._client().search(index=self._name(), body=body)
        return [h["_source"]["value"] for h in response["hits"]["hits"]]

    def put_run(self, run: RunRecord) -> None:
        doc = {
            "run_id": run.run_id,
            "kind": "run",
            "source": run.source,
            "at": run.started_at.isoformat(),
            "value": run.model_dump_json(),
        }
        self._put([(run_key(run.run_id), doc)])

    def get_run(self, run_id: str) -> RunRecord:
        return RunRecord.model_validate_json(self._get(run_key(run_id), f"sync run {run_id!r}"))

    def runs(self, source: str | None = None, limit: int = 20) -> list[RunRecord]:
        filters: list[dict[str, Any]] = [{"term": {"kind": "run"}}]
        if source is not None:
            filters.append({"term": {"source": source}})
        return [RunRecord.model_validate_json(v) for v in self._search(filters, "desc", limit)]

    def put_batches(self, batches: Sequence[BatchRecord]) -> None:
        for start in range(0, len(batches), 200):
            self._put(
                [
                    (
                        batch_key(b.run_id, b.index),
                        {
                            "run_id": b.run_id,
                            "kind": "batch",
                            "source": b.documents[0].source if b.documents else "",
                            "at": f"{b.index:06d}",
                            "value": b.model_dump_json(),
                        },
                    )
                    for b in batches[start : start + 200]
                ]
            )

    def get_batch(self, run_id: str, index: int) -> BatchRecord:
        value = self._get(batch_key(run_id, index), f"batch {index} in sync run {run_id!r}")
        return BatchRecord.model_validate_json(value)

    def batches(self, run_id: str) -> list[BatchRecord]:
        filters = [{"term": {"kind": "batch"}}, {"term": {"run_id": run_id}}]
        values = self._search(filters, "asc", 10_000)
        return [BatchRecord.model_validate_json(v) for v in values]
