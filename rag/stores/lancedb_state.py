"""Sync state in a LanceDB table beside the chunks table (``<table>__sync``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from rag.ids import checked_id
from rag.sync.state import DocState

_SCHEMA = pa.schema(
    [
        pa.field("document_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("state", pa.string(), nullable=False),  # DocState as JSON
    ]
)


class LanceDBSyncState:
    """A SyncStateStore on LanceDB. ``db_factory`` returns the store's (lazy) connection."""

    def __init__(self, connect: Any, table: str) -> None:
        self._connect = connect
        self._name = f"{table}__sync"
        self._table: Any = None

    def _t(self) -> Any:
        if self._table is None:
            db = self._connect()
            self._table = db.create_table(self._name, schema=_SCHEMA, exist_ok=True)
        return self._table

    def load(self, source: str) -> dict[str, DocState]:
        rows = self._t().to_arrow().to_pylist()
        states = (DocState.model_validate_json(r["state"]) for r in rows if r["source"] == source)
        return {s.document_id: s for s in states}

    def get(self, source: str, document_ids: Sequence[str]) -> dict[str, DocState]:
        if not document_ids:
            return {}
        ids = ", ".join(f"'{checked_id(d)}'" for d in sorted(set(document_ids)))
        rows = self._t().search().where(f"document_id IN ({ids})").limit(None).to_arrow()
        states = (DocState.model_validate_json(r["state"]) for r in rows.to_pylist())
        return {s.document_id: s for s in states if s.source == source}

    def put(self, states: Sequence[DocState]) -> None:
        if not states:
            return
        data = pa.table(
            {
                "document_id": [checked_id(s.document_id) for s in states],
                "source": [s.source for s in states],
                "state": [s.model_dump_json() for s in states],
            },
            schema=_SCHEMA,
        )
        (
            self._t()
            .merge_insert("document_id")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(data)
        )

    def delete(self, source: str, document_ids: Sequence[str]) -> None:
        if not document_ids:
            return
        ids = ", ".join(f"'{checked_id(d)}'" for d in document_ids)
        self._t().delete(f"document_id IN ({ids})")
