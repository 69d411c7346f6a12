"""The embedded store: LanceDB on local disk, ACL pre-filtered vector search.

Each chunk row holds its ``allow`` and ``deny`` principals as ``list<string>`` columns with
LabelList scalar indexes; a search compiles the caller's principals into a filter that LanceDB
applies *before* the vector search (``prefilter=True``), so restrictive ACLs still get the full k.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Collection, Sequence
from collections.abc import Set as AbstractSet
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pyarrow as pa

from rag.config import StoreSettings
from rag.embeddings.base import Vectors
from rag.errors import AccessDeniedError, IndexNotFoundError, StoreError
from rag.models import Acl, Chunk, Citation, SearchHit, epoch_ms, from_epoch_ms
from rag.stores.base import (
    DeadLetter,
    IndexInfo,
    check_compatible,
    checked_id,
    checked_principals,
)
from rag.stores.limits import checked_k

if TYPE_CHECKING:
    from rag.stores.lancedb_runs import LanceDBRunLog
    from rag.stores.lancedb_state import LanceDBSyncState

_RESULT_COLUMNS: Final = [
    "id",
    "document_id",
    "source",
    "ordinal",
    "text",
    "token_count",
    "allow",
    "deny",
    "citation",
    "metadata",
    "_distance",
]
_CHECKED: Final = "acl_checked_ms"
_WATERMARK: Final = "acls_confirmed_at:"


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def compile_acl_filter(
    principals: AbstractSet[str],
    fresh_after_ms: int | None = None,
    fresh_sources: Collection[str] = (),
) -> str:
    """The LanceDB (DataFusion SQL) filter admitting rows ``principals`` may read.

    Pure and deterministic. Principals are validated (canonical form) and bound as quoted SQL
    string literals: any id is a literal, never syntax. Deny wins over allow. With
    ``fresh_after_ms``, only rows whose ACL was confirmed at or after it (epoch ms): written
    since, or in one of ``fresh_sources`` (confirmed whole by a complete listing since).
    """
    literals = ", ".join(_quote(p) for p in checked_principals(principals))
    where = f"array_has_any(allow, [{literals}]) AND NOT array_has_any(deny, [{literals}])"
    if fresh_after_ms is not None:
        fresh = f"{_CHECKED} >= {int(fresh_after_ms)}"
        if fresh_sources:
            names = ", ".join(_quote(s) for s in sorted(fresh_sources))
            fresh = f"({fresh} OR source IN ({names}))"
        where += f" AND {fresh}"
    return where


def _schema(dimension: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("document_id", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("ordinal", pa.int32(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
            pa.field("token_count", pa.int32(), nullable=False),
            pa.field("allow", pa.list_(pa.string()), nullable=False),
            pa.field("deny", pa.list_(pa.string()), nullable=False),
            pa.field("citation", pa.string(), nullable=False),
            pa.field("metadata", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dimension), nullable=False),
            pa.field(_CHECKED, pa.int64(), nullable=False),  # 0: never confirmed
        ]
    )


class LanceDBStore:
    """A VectorStore on LanceDB. Construction does no I/O; the table opens on first use."""

    def __init__(self, uri: Path, settings: StoreSettings) -> None:
        self._uri = uri
        self._settings = settings
        self._db: Any = None
        self._table: Any = None
        self._info: IndexInfo | None = None
        self._marks: tuple[float, dict[str, datetime]] | None = None
        self._has_checked: bool | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def _connect(self) -> Any:
        if self._db is None:
            os.environ.setdefault("LANCEDB_LOG", "error")  # creation notices are not warnings
            import lancedb

            self._uri.mkdir(parents=True, exist_ok=True)
            self._db = lancedb.connect(
                str(self._uri),
                read_consistency_interval=timedelta(
                    seconds=self._settings.read_consistency_seconds
                ),
            )
        return self._db

    @property
    def _meta_name(self) -> str:
        return f"{self._settings.table}__meta"

    def _table_names(self) -> set[str]:
        return set(self._connect().list_tables().tables)

    def ensure_index(self, info: IndexInfo) -> None:
        db = self._connect()
        names = self._table_names()
        if self._meta_name in names:
            existing = self._read_info()
            check_compatible(existing, info)
        else:
            meta = pa.table(
                {"key": ["model_id", "dimension"], "value": [info.model_id, str(info.dimension)]}
            )
            db.create_table(self._meta_name, meta, mode="overwrite")
        if self._settings.table not in names:
            db.create_table(self._settings.table, schema=_schema(info.dimension), exist_ok=True)
        self._table = db.open_table(self._settings.table)
        if _CHECKED not in self._table.schema.names:  # a table made before ACL check times
            self._table.add_columns({_CHECKED: "CAST(0 AS BIGINT)"})
        self._has_checked = True
        self._info = info

    def _read_info(self) -> IndexInfo:
        rows = self._connect().open_table(self._meta_name).to_arrow().to_pylist()
        values = {r["key"]: r["value"] for r in rows}
        return IndexInfo(model_id=values["model_id"], dimension=int(values["dimension"]))

    def index_info(self) -> IndexInfo | None:
        """What the existing index was built with, or None if there is none yet."""
        if not self._uri.exists() or self._meta_name not in self._table_names():
            return None
        return self._read_info()

    def _open_for_read(self) -> Any:
        """The chunks table, opened without creating anything (no folder, no table): reads never
        write. Nothing ingested here is an :class:`IndexNotFoundError` naming the location."""
        if self._table is not None:
            return self._table
        if not self._uri.exists() or not {self._meta_name, self._settings.table} <= (
            self._table_names()
        ):
            raise IndexNotFoundError(
                f"nothing ingested at {self._uri} (table {self._settings.table!r}): "
                "run rag ingest first"
            )
        info = self._read_info()
        self._table = self._connect().open_table(self._settings.table)
        self._info = info
        return self._table

    def _require_table(self) -> Any:
        """The chunks table for a write (an existing index is opened as by ensure_index)."""
        if self._table is None:
            info = self.index_info()
            if info is None:
                raise StoreError(f"no index at {self._uri}: ingest something first")
            self.ensure_index(info)
        return self._table

    # -- writes ------------------------------------------------------------------------------
    def upsert(self, chunks: Sequence[Chunk], vectors: Vectors) -> None:
        if not chunks:
            return
        if vectors.shape[0] != len(chunks):
            raise StoreError(f"{len(chunks)} chunks but {vectors.shape[0]} vectors")
        table = self._require_table()
        data = self._to_arrow(chunks, vectors)
        try:
            (
                table.merge_insert("id")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute(data)
            )
        except Exception as exc:
            raise StoreError(f"LanceDB upsert failed: {exc}") from exc

    def _to_arrow(self, chunks: Sequence[Chunk], vectors: Vectors) -> pa.Table:
        assert self._info is not None
        dim = self._info.dimension
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
        return pa.table(
            {
                "id": [checked_id(c.id) for c in chunks],
                "document_id": [checked_id(c.document_id) for c in chunks],
                "source": [c.source for c in chunks],
                "ordinal": pa.array([c.ordinal for c in chunks], pa.int32()),
                "text": [c.text for c in chunks],
                "token_count": pa.array([c.token_count for c in chunks], pa.int32()),
                "allow": pa.array([sorted(c.acl.allow) for c in chunks], pa.list_(pa.string())),
                "deny": pa.array([sorted(c.acl.deny) for c in chunks], pa.list_(pa.string())),
                "citation": [c.citation.model_dump_json() for c in chunks],
                "metadata": [json.dumps(c.metadata, sort_keys=True) for c in chunks],
                "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
                _CHECKED: pa.array([epoch_ms(c.acl_checked_at) for c in chunks], pa.int64()),
            },
            schema=_schema(dim),
        )

    def delete_document(self, document_id: str, keep: Collection[str] = ()) -> None:
        table = self._require_table()
        where = f"document_id = {_quote(checked_id(document_id))}"
        if keep:
            kept = ", ".join(_quote(checked_id(i)) for i in sorted(keep))
            where += f" AND id NOT IN ({kept})"
        try:
            table.delete(where)
        except Exception as exc:
            raise StoreError(f"LanceDB delete failed: {exc}") from exc

    def update_acl(self, document_id: str, acl: Acl) -> int:
        """Replace the ACL of a document's chunks; text and vectors are rewritten unchanged."""
        table = self._require_table()
        where = f"document_id = {_quote(checked_id(document_id))}"
        rows = table.search().where(where).limit(None).to_arrow()
        if rows.num_rows == 0:
            return 0
        allow = pa.array([sorted(acl.allow)] * rows.num_rows, pa.list_(pa.string()))
        deny = pa.array([sorted(acl.deny)] * rows.num_rows, pa.list_(pa.string()))
        rows = rows.set_column(rows.schema.get_field_index("allow"), "allow", allow)
        rows = rows.set_column(rows.schema.get_field_index("deny"), "deny", deny)
        assert self._info is not None
        rows = rows.select(_schema(self._info.dimension).names).cast(_schema(self._info.dimension))
        try:
            (
                table.merge_insert("id")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute(rows)
            )
        except Exception as exc:
            raise StoreError(f"LanceDB ACL update failed: {exc}") from exc
        return int(rows.num_rows)

    def confirm_acls(self, source: str, at: datetime) -> None:
        """The source's ACL watermark, kept in the meta table (one row per source)."""
        self._require_table()
        row = pa.table({"key": [_WATERMARK + source], "value": [str(epoch_ms(at))]})
        meta = self._connect().open_table(self._meta_name)
        try:
            meta.merge_insert(
                "key"
            ).when_matched_update_all().when_not_matched_insert_all().execute(row)
        except Exception as exc:
            raise StoreError(f"LanceDB ACL watermark write failed: {exc}") from exc
        self._marks = None

    def acl_watermarks(self) -> dict[str, datetime]:
        """Read-only; cached for a second (a stale answer is only ever older: fail closed)."""
        now = time.monotonic()
        if self._marks is not None and now - self._marks[0] < 1.0:
            return self._marks[1]
        self._marks = (now, self._read_watermarks())
        return self._marks[1]

    def _read_watermarks(self) -> dict[str, datetime]:
        if not self._uri.exists() or self._meta_name not in self._table_names():
            return {}
        rows = self._connect().open_table(self._meta_name).to_arrow().to_pylist()
        marks = {
            r["key"].removeprefix(_WATERMARK): from_epoch_ms(int(r["value"]))
            for r in rows
            if r["key"].startswith(_WATERMARK)
        }
        return {source: at for source, at in marks.items() if at is not None}

    def oldest_acl_check(self, source: str) -> datetime | None:
        """The oldest ACL confirmation among the source's chunks (None: none, or never)."""
        rows = (
            self._require_table()
            .search()
            .where(f"source = {_quote(source)}")
            .select([_CHECKED])
            .limit(None)
            .to_arrow()
        )
        if rows.num_rows == 0:
            return None
        oldest = int(pa.compute.min(rows.column(_CHECKED)).as_py())
        mark = self.acl_watermarks().get(source)
        return from_epoch_ms(max(oldest, epoch_ms(mark)))

    def run_log(self) -> LanceDBRunLog:
        """Sync run records in a table beside this store's chunks table."""
        from rag.stores.lancedb_runs import LanceDBRunLog

        return LanceDBRunLog(self._connect, self._settings.table)

    def sync_state(self) -> LanceDBSyncState:
        """The sync state table beside this store's chunks table."""
        from rag.stores.lancedb_state import LanceDBSyncState

        return LanceDBSyncState(self._connect, self._settings.table)

    def refresh(self) -> None:
        """LanceDB commits are visible to readers at once: nothing to do."""

    @property
    def dead_letters(self) -> list[DeadLetter]:
        return []  # LanceDB writes a batch whole or raises

    def optimize(self) -> None:
        """Create missing indexes (ACL label lists; the ANN index once the table has
        ``ann_min_rows`` rows), then let LanceDB fold new rows into existing indexes."""
        table = self._require_table()
        rows = table.count_rows()
        if rows == 0:
            return
        indexed = {column for index in table.list_indices() for column in index.columns}
        try:
            for column in ("allow", "deny", "document_id"):
                if column not in indexed:
                    kind = "BTREE" if column == "document_id" else "LABEL_LIST"
                    table.create_scalar_index(column, index_type=kind, replace=True)
            ann = self._settings.ann_min_rows
            if ann and rows >= ann and "vector" not in indexed:
                table.create_index(metric="cosine", index_type="IVF_HNSW_SQ", replace=True)
            table.optimize()  # compaction and incremental indexing of rows added since
        except Exception as exc:
            raise StoreError(f"LanceDB index build failed: {exc}") from exc

    # -- reads -------------------------------------------------------------------------------
    def search(
        self,
        vector: Vectors,
        principals: AbstractSet[str],
        k: int,
        *,
        acl_fresh_after: datetime | None = None,
    ) -> list[SearchHit]:
        if not principals:
            raise AccessDeniedError("search without principals is refused")
        fresh = None if acl_fresh_after is None else epoch_ms(acl_fresh_after)
        marks = self.acl_watermarks()
        sources = [s for s, at in marks.items() if fresh is not None and epoch_ms(at) >= fresh]
        where = compile_acl_filter(principals, fresh, sources)
        k = checked_k(k)
        table = self._open_for_read()
        columns = list(_RESULT_COLUMNS)
        if self._has_checked is None:  # once per opened table (a writer migrates it)
            self._has_checked = _CHECKED in table.schema.names
        if self._has_checked:
            columns.append(_CHECKED)
        elif fresh is not None:
            raise StoreError(
                f"the index at {self._uri} predates ACL check times: run rag ingest once "
                "before querying with max_acl_age"
            )
        assert self._info is not None
        if vector.shape != (self._info.dimension,):
            raise StoreError(f"query vector shape {vector.shape} != ({self._info.dimension},)")
        query = (
            table.search(vector.astype(np.float32), vector_column_name="vector")
            .distance_type("cosine")
            .where(where, prefilter=True)
            .select(columns)
            .limit(k)
        )
        if self._settings.ann_min_rows:
            query = query.nprobes(self._settings.nprobes).refine_factor(
                self._settings.refine_factor
            )
        try:
            rows = query.to_arrow().to_pylist()
        except Exception as exc:
            raise StoreError(f"LanceDB search failed: {exc}") from exc
        return [SearchHit(chunk=_chunk(r, marks), score=1.0 - float(r["_distance"])) for r in rows]

    def count(self) -> int:
        return int(self._open_for_read().count_rows())

    def chunk_ids(self) -> set[str]:
        """Every chunk id in the index (for audits and tests)."""
        return set(self._open_for_read().to_arrow().column("id").to_pylist())


def _chunk(row: dict[str, Any], marks: dict[str, datetime] | None = None) -> Chunk:
    """A chunk from a row; its ACL check time is the later of its write and its source's
    watermark."""
    mark = (marks or {}).get(row["source"])
    checked = max(int(row.get(_CHECKED) or 0), epoch_ms(mark))
    return Chunk(
        id=row["id"],
        document_id=row["document_id"],
        source=row["source"],
        ordinal=row["ordinal"],
        text=row["text"],
        token_count=row["token_count"],
        acl=Acl(allow=frozenset(row["allow"]), deny=frozenset(row["deny"])),
        citation=Citation.model_validate_json(row["citation"]),
        metadata=json.loads(row["metadata"]),
        acl_checked_at=from_epoch_ms(checked),
    )
