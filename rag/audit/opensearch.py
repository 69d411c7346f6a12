"""Audit records in OpenSearch indexes beside the chunks: ``<alias>-audit`` and
``<alias>-feedback`` (created on the first write, one document per record, id = record id)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from rag.audit.base import AuditRecord, Feedback
from rag.config import OpenSearchSettings
from rag.errors import AuditError

_KEYWORD = {"type": "keyword"}
_MAPPINGS: dict[str, dict[str, Any]] = {
    "audit": {
        "dynamic": "strict",
        "properties": {
            "id": _KEYWORD,
            "at": {"type": "date"},
            "user_id": _KEYWORD,
            "issuer": _KEYWORD,
            "subject": _KEYWORD,
            "principals_count": {"type": "integer"},
            "principals_hash": _KEYWORD,
            "query_hash": _KEYWORD,
            "query": {"type": "text"},
            "mode": _KEYWORD,
            "k": {"type": "integer"},
            "hits": {"type": "object", "enabled": False},
            "latency_ms": {"type": "float"},
        },
    },
    "feedback": {
        "dynamic": "strict",
        "properties": {
            "audit_id": _KEYWORD,
            "at": {"type": "date"},
            "helpful": {"type": "boolean"},
            "note": {"type": "text"},
        },
    },
}
_MAX_READ = 10_000


class OpenSearchAuditSink:
    """Construction does no I/O; the client and indexes are made on first use."""

    def __init__(self, settings: OpenSearchSettings, client: Any = None) -> None:
        self._settings = settings
        self._client = client
        self._ready: set[str] = set()

    def _c(self) -> Any:
        if self._client is None:
            from rag.stores.opensearch import _make_client

            self._client = _make_client(self._settings)
        return self._client

    def _index(self, kind: str, create: bool) -> str:
        name = f"{self._settings.alias}-{kind}"
        if create and name not in self._ready:
            client = self._c()
            if not client.indices.exists(index=name):
                body = {
                    "settings": {"index": {"number_of_replicas": self._settings.replicas}},
                    "mappings": _MAPPINGS[kind],
                }
                client.indices.create(index=name, body=body, ignore=400)
            self._ready.add(name)
        return name

    def write(self, record: AuditRecord) -> None:
        self._put("audit", record.id, record.model_dump(mode="json"))

    def write_feedback(self, feedback: Feedback) -> None:
        self._put("feedback", None, feedback.model_dump(mode="json"))

    def _put(self, kind: str, doc_id: str | None, body: dict[str, Any]) -> None:
        from opensearchpy.exceptions import OpenSearchException

        try:
            self._c().index(index=self._index(kind, True), id=doc_id, body=body)
        except OpenSearchException as exc:
            raise AuditError(f"cannot write the {kind} record to OpenSearch: {exc}") from exc

    def records(
        self, *, user_id: str | None = None, since: datetime | None = None
    ) -> Iterator[AuditRecord]:
        filters: list[dict[str, Any]] = []
        if user_id is not None:
            filters.append({"term": {"user_id": user_id}})
        for source in self._search("audit", filters, since):
            yield AuditRecord.model_validate(source)

    def feedback(self, *, since: datetime | None = None) -> Iterator[Feedback]:
        for source in self._search("feedback", [], since):
            yield Feedback.model_validate(source)

    def _search(
        self, kind: str, filters: list[dict[str, Any]], since: datetime | None
    ) -> list[dict[str, Any]]:
        from opensearchpy.exceptions import NotFoundError, OpenSearchException

        if since is not None:
            filters = [*filters, {"range": {"at": {"gte": since.isoformat()}}}]
        body = {
            "size": _MAX_READ,
            "sort": [{"at": "asc"}],
            "query": {"bool": {"filter": filters}},
        }
        try:
            index = self._index(kind, False)
            self._c().indices.refresh(index=index)
            response = self._c().search(index=index, body=body)
        except NotFoundError:
            return []
        except OpenSearchException as exc:
            raise AuditError(f"cannot read the {kind} records from OpenSearch: {exc}") from exc
        return [hit["_source"] for hit in response["hits"]["hits"]]
