"""Run records in a LanceDB table beside the chunks table (``<table>__runs``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from rag.errors import StoreError
from rag.sync.runs import BatchRecord, RunRecord, batch_key, run_key

_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("at", pa.string(), nullable=False),
        pa.field("value", pa.string(), nullable=False),
    ]
)


def _q(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class LanceDBRunLog:
    def __init__(self, connect: Any, table: str) -> None:
        self._connect = connect
        self._name = f"{table}__runs"
        self._table: Any = None

    def _t(self) -> Any:
        if self._table is None:
            self._table = self._connect().create_table(self._name, schema=_SCHEMA, exist_ok=True)
        return self._table

    def _put(self, rows: list[dict[str, str]]) -> None:
        if rows:
            data = pa.Table.from_pylist(rows, schema=_SCHEMA)
            self._t().merge_insert(
                "key"
            ).when_matched_update_all().when_not_matched_insert_all().execute(data)

    def _where(self, where: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = (
            self._t().search().where(where).limit(None).to_arrow().to_pylist()
        )
        return rows

    def put_run(self, run: RunRecord) -> None:
        self._put(
            [
                {
                    "key": run_key(run.run_id),
                    "run_id": run.run_id,
                    "kind": "run",
                    "source": run.source,
                    "at": run.started_at.isoformat(),
                    "value": run.model_dump_json(),
                }
            ]
        )

    def get_run(self, run_id: str) -> RunRecord:
        rows = self._where(f"key = {_q(run_key(run_id))}")
        if not rows:
            raise StoreError(f"no sync run {run_id!r}")
        return RunRecord.model_validate_json(rows[0]["value"])

    def runs(self, source: str | None = None, limit: int = 20) -> list[RunRecord]:
        if self._table is None and self._name not in set(self._connect().list_tables().tables):
            return []  # reading creates nothing
        where = "kind = 'run'" + (f" AND source = {_q(source)}" if source is not None else "")
        rows = sorted(self._where(where), key=lambda r: r["at"], reverse=True)[:limit]
        return [RunRecord.model_validate_json(r["value"]) for r in rows]

    def put_batches(self, batches: Sequence[BatchRecord]) -> None:
        self._put(
            [
                {
                    "key": batch_key(b.run_id, b.index),
                    "run_id": b.run_id,
                    "kind": "batch",
                    "source": b.documents[0].source if b.documents else "",
                    "at": f"{b.index:06d}",
                    "value": b.model_dump_json(),
                }
                for b in batches
            ]
        )

    def get_batch(self, run_id: str, index: int) -> BatchRecord:
        rows = self._where(f"key = {_q(batch_key(run_id, index))}")
        if not rows:
            raise StoreError(f"no batch {index} in sync run {run_id!r}")
        return BatchRecord.model_validate_json(rows[0]["value"])

    def batches(self, run_id: str) -> list[BatchRecord]:
        rows = self._where(f"kind = 'batch' AND run_id = {_q(run_id)}")
        return sorted(
            (BatchRecord.model_validate_json(r["value"]) for r in rows), key=lambda b: b.index
        )
