"""The embedded store: LanceDB on local disk, ACL pre-filtered vector, BM25 and hybrid search.

Each chunk row holds its ``allow`` and ``deny`` principals as ``list<string>`` columns with
LabelList scalar indexes; a search compiles the caller's principals into a filter that LanceDB
applies *before* the vector or keyword search (``prefilter=True``), so restrictive ACLs still get
the full k. Each row also holds ``acl_key``, the digest of its ACL (BITMAP-indexed), and a
registry table holds each distinct ACL by key (:mod:`rag.stores.lancedb_acls`): a caller with
more than ``acl_ids_min_principals`` principals is filtered by ``acl_key IN (the keys they may
read)`` instead (:mod:`rag.stores.acl_keys`), a filter that does not grow with their groups.
Keywords are ranked by LanceDB's native BM25 index on ``text`` (created with the
table; rows written since its last update are searched unindexed until :meth:`optimize` folds
them in, so a lagging index is slower, never wrong). Hybrid fuses both rankings by reciprocal
rank, as OpenSearch does. A metadata filter (:mod:`rag.filters`) compiles into a clause AND-ed
after the ACL clause, over columns of its own: ``uri``, ``title``, ``mime_type``,
``modified_ms``, and the metadata as JSON (``meta_str``: each value's text; ``meta_num``: the
numeric ones).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Collection, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pyarrow as pa

from rag.config import StoreSettings
from rag.embeddings.base import Vectors
from rag.errors import AccessDeniedError, IndexNotFoundError, StoreError
from rag.filters import (
    And,
    Eq,
    Filter,
    FilterView,
    In,
    Not,
    Or,
    Prefix,
    Value,
    check_size,
    filter_view,
    resolve_field,
    time_ms,
)
from rag.models import Acl, Chunk, Citation, SearchHit, epoch_ms, from_epoch_ms
from rag.stores import lancedb_ann as ann_index
from rag.stores.acl_keys import ACL_KEY, AclKeyOptions, acl_key, chunk_acls
from rag.stores.base import (
    DeadLetter,
    IndexInfo,
    check_compatible,
    checked_id,
    checked_principals,
    require_principals,
)
from rag.stores.counts import CountCache
from rag.stores.fusion import reciprocal_rank_fusion
from rag.stores.lancedb_acls import LanceDBAclRegistry
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
]
_CHECKED: Final = "acl_checked_ms"
_WATERMARK: Final = "acls_confirmed_at:"
_META_STR: Final = "meta_str"
_META_NUM: Final = "meta_num"
_JSON: Final = pa.json_(pa.utf8())
_FILTER_FIELDS: Final = (
    pa.field("uri", pa.string()),
    pa.field("title", pa.string()),
    pa.field("mime_type", pa.string()),
    pa.field("modified_ms", pa.int64()),
    pa.field(_META_STR, _JSON),  # null only in rows written before filters (until migrated)
    pa.field(_META_NUM, _JSON),
)
_FILTER_COLUMNS: Final = {f.name for f in _FILTER_FIELDS}
_BUILTIN_COLUMNS: Final = {
    "source": "source",
    "document_id": "document_id",
    "uri": "uri",
    "title": "title",
    "mime_type": "mime_type",
    "modified": "modified_ms",
}
_NOT_NULL: Final = frozenset({"source", "document_id"})
_RRF_DEPTH: Final = 50
_ACL_KEY_INDEX: Final = "BITMAP"  # few distinct keys, many rows each (measured vs BTREE)
_SQL_OPS: Final = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


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
    return where + _fresh_clause(fresh_after_ms, fresh_sources)


def compile_key_filter(
    keys: Sequence[str],
    fresh_after_ms: int | None = None,
    fresh_sources: Collection[str] = (),
) -> str:
    """The filter admitting rows whose ``acl_key`` is one of ``keys`` (the caller's readable
    ACLs, see :mod:`rag.stores.acl_keys`); no keys: always false. The freshness bound is the
    same clause as :func:`compile_acl_filter`'s, AND-ed."""
    where = f"{ACL_KEY} IN ({', '.join(_quote(k) for k in keys)})" if keys else "false"
    return where + _fresh_clause(fresh_after_ms, fresh_sources)


def _fresh_clause(fresh_after_ms: int | None, fresh_sources: Collection[str]) -> str:
    if fresh_after_ms is None:
        return ""
    fresh = f"{_CHECKED} >= {int(fresh_after_ms)}"
    if fresh_sources:
        names = ", ".join(_quote(s) for s in sorted(fresh_sources))
        fresh = f"({fresh} OR source IN ({names}))"
    return f" AND {fresh}"


def compile_filter(node: Filter) -> str:
    """The LanceDB (DataFusion SQL) clause of a metadata filter. Pure and deterministic.

    Columns come from a fixed map of built-in fields; a metadata key and every value are bound
    as quoted SQL string (or numeric) literals, exactly like principals: nothing in a filter is
    ever syntax. Each comparison is false where the field is missing (two-valued logic). The
    caller AND-s the result after the ACL clause, which no filter can reach.
    """
    check_size(node)
    return _sql(node)


def _sql(node: Filter) -> str:
    if isinstance(node, And | Or):
        joiner = " AND " if isinstance(node, And) else " OR "
        return "(" + joiner.join(_sql(child) for child in node.filters) + ")"
    if isinstance(node, Not):
        return f"(NOT {_sql(node.filter)})"
    if isinstance(node, Eq):
        return _compare(node.field, "=", node.value)
    if isinstance(node, In):
        return _in(node.field, node.values)
    if isinstance(node, Prefix):
        expr, literal = _operand(node.field, node.value)
        return _guarded(node.field, expr, f"starts_with({expr}, {literal})")
    parts = [_compare(node.field, _SQL_OPS[op], value) for op, value in node.bounds().items()]
    return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"


def _operand(field: str, value: Value) -> tuple[str, str]:
    """The SQL expression a field compares by for ``value``'s type, and ``value``'s literal."""
    ref = resolve_field(field)
    if ref.kind == "builtin":
        column = _BUILTIN_COLUMNS[ref.name]
        if ref.name == "modified":
            return column, str(time_ms(value))
        assert isinstance(value, str)
        return column, _quote(value)
    key = _quote(ref.name)
    if isinstance(value, bool):
        return f"json_get_string({_META_STR}, {key})", _quote("true" if value else "false")
    if isinstance(value, int | float):
        return f"json_get_float({_META_NUM}, {key})", repr(float(value))
    assert isinstance(value, str)
    return f"json_get_string({_META_STR}, {key})", _quote(value)


def _guarded(field: str, expr: str, test: str) -> str:
    """``test`` made false (not NULL) where the field is missing, so NOT stays two-valued."""
    ref = resolve_field(field)
    if ref.kind == "builtin" and ref.name in _NOT_NULL:
        return f"({test})"
    return f"({expr} IS NOT NULL AND {test})"


def _compare(field: str, op: str, value: Value) -> str:
    expr, literal = _operand(field, value)
    return _guarded(field, expr, f"{expr} {op} {literal}")


def _in(field: str, values: Sequence[Value]) -> str:
    groups: dict[str, list[str]] = {}
    for value in values:
        expr, literal = _operand(field, value)
        if literal not in groups.setdefault(expr, []):
            groups[expr].append(literal)
    parts = [
        _guarded(field, expr, f"{expr} IN ({', '.join(literals)})")
        for expr, literals in groups.items()
    ]
    return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"


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
            *_FILTER_FIELDS,
            pa.field(ACL_KEY, pa.string()),  # null only in rows written before ACL keys
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
        self._filters_ready = False  # every row has its filter columns (checked when needed)
        self._has_text_index = False
        self._threads: ThreadPoolExecutor | None = None
        self._counts = CountCache()
        self._acls = LanceDBAclRegistry(self._connect, settings.table, AclKeyOptions.of(settings))

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
        if ACL_KEY not in self._table.schema.names:  # a table made before ACL keys
            self._table.add_columns([pa.field(ACL_KEY, pa.string())])
        self._acls.create(names)
        self._acls.backfill(self._table)
        self._migrate_filter_columns()
        self._ensure_text_index()

    def _migrate_filter_columns(self) -> None:
        """Give a table made before metadata filters its filter columns, and fill them in for
        rows written before (computed from each row's citation and metadata; vectors and ACLs
        are not touched)."""
        table = self._table
        missing = [f for f in _FILTER_FIELDS if f.name not in table.schema.names]
        done: set[str] = set()
        try:
            if missing:
                table.add_columns(missing)
            while True:
                rows = (
                    table.search()
                    .where(f"{_META_STR} IS NULL")
                    .select(
                        [
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
                        ]
                    )
                    .limit(10_000)
                    .to_arrow()
                )
                if rows.num_rows == 0:
                    break
                chunks = [_chunk(r) for r in rows.to_pylist()]
                if done.intersection(c.id for c in chunks):
                    raise StoreError("rows kept no filter columns after an update")
                done.update(c.id for c in chunks)
                data = pa.table(
                    {"id": [c.id for c in chunks], **_filter_arrays(chunks)},
                    schema=pa.schema([pa.field("id", pa.string(), False), *_FILTER_FIELDS]),
                )
                table.merge_insert("id").when_matched_update_all().execute(data)
        except Exception as exc:
            raise StoreError(f"LanceDB filter column migration failed: {exc}") from exc
        self._filters_ready = True

    def _ensure_text_index(self) -> None:
        """The BM25 index on ``text`` (made with the table, so every later write is searchable
        by keyword: unindexed rows are scanned until :meth:`optimize` folds them in)."""
        from lancedb.index import FTS

        table = self._table
        if any(index.index_type == "FTS" for index in table.list_indices()):
            self._has_text_index = True
            return
        try:
            table.create_index("text", config=FTS(), replace=True)
        except Exception as exc:
            raise StoreError(f"LanceDB keyword index build failed: {exc}") from exc
        self._has_text_index = True

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
        self._acls.register(chunk_acls(chunks))  # before the rows that reference them
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
                **_filter_arrays(chunks),
                ACL_KEY: pa.array([acl_key(c.acl) for c in chunks], pa.string()),
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
        """Replace the ACL of a document's chunks; only the ``allow``, ``deny`` and ``acl_key``
        columns are written, in one row write (text, vectors and indexes stay). The new key is
        registered first."""
        table = self._require_table()
        where = f"document_id = {_quote(checked_id(document_id))}"
        ids = table.search().where(where).select(["id"]).limit(None).to_arrow().column("id")
        if len(ids) == 0:
            return 0
        key = acl_key(acl)
        self._acls.register({key: acl})
        rows = pa.table(
            {
                "id": ids,
                "allow": pa.array([sorted(acl.allow)] * len(ids), pa.list_(pa.string())),
                "deny": pa.array([sorted(acl.deny)] * len(ids), pa.list_(pa.string())),
                ACL_KEY: pa.array([key] * len(ids), pa.string()),
            },
            schema=pa.schema(
                [
                    pa.field("id", pa.string(), nullable=False),
                    pa.field("allow", pa.list_(pa.string()), nullable=False),
                    pa.field("deny", pa.list_(pa.string()), nullable=False),
                    pa.field(ACL_KEY, pa.string()),
                ]
            ),
        )
        try:
            table.merge_insert("id").when_matched_update_all().execute(rows)
        except Exception as exc:
            raise StoreError(f"LanceDB ACL update failed: {exc}") from exc
        return len(ids)

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
        """Create missing indexes (ACL label lists, the ACL key, BM25 on ``text``; the ANN
        index once the table has ``ann_min_rows`` rows), then let LanceDB fold new rows into
        existing indexes (incrementally: the keyword index is not rebuilt)."""
        table = self._require_table()
        rows = table.count_rows()
        if rows == 0:
            return
        indices = table.list_indices()
        indexed = {column for index in indices for column in index.columns}
        vector_kinds = {i.index_type for i in indices if "vector" in i.columns}
        try:
            kinds = {"allow": "LABEL_LIST", "deny": "LABEL_LIST", "document_id": "BTREE"}
            kinds[ACL_KEY] = _ACL_KEY_INDEX
            for column, kind in kinds.items():
                if column not in indexed and column in table.schema.names:
                    table.create_scalar_index(column, index_type=kind, replace=True)
            if "text" not in indexed:
                self._ensure_text_index()
            ann = self._settings.ann_min_rows
            # an index of another kind (one HNSW graph, before IVF_SQ) is rebuilt: ~1 min per
            # million rows; searches use the old one until the new one commits
            stale = bool(vector_kinds) and vector_kinds != {ann_index.INDEX_KIND}
            if ann and rows >= ann and ("vector" not in indexed or stale):
                table.create_index(
                    metric="cosine",
                    index_type=ann_index.INDEX_TYPE,
                    num_partitions=ann_index.partitions(rows),
                    replace=True,
                )
            table.optimize()  # compaction; rows added since are folded into every index
        except Exception as exc:
            raise StoreError(f"LanceDB index build failed: {exc}") from exc

    # -- reads -------------------------------------------------------------------------------
    def _prepare(
        self,
        principals: AbstractSet[str],
        k: int,
        acl_fresh_after: datetime | None,
        filter: Filter | None,
    ) -> tuple[Any, str, list[str], dict[str, datetime], int, str]:
        """The table, the WHERE clause (the ACL clause, AND the filter's), the columns to read,
        the sources' watermarks, the checked k, and the ACL clause alone (no freshness bound,
        no filter: what the ACL scalar indexes count, to plan the vector search)."""
        if not principals:
            raise AccessDeniedError("search without principals is refused")
        fresh = None if acl_fresh_after is None else epoch_ms(acl_fresh_after)
        marks = self.acl_watermarks()
        sources = [s for s, at in marks.items() if fresh is not None and epoch_ms(at) >= fresh]
        table = self._open_for_read()
        if self._acls.state.wanted(principals) and self._acls.keyed(table, self._table_names):
            acl = compile_key_filter(self._acls.readable(principals))
        else:
            acl = compile_acl_filter(principals)
        where = acl + _fresh_clause(fresh, sources)  # as the compilers AND it, built once
        if filter is not None:
            where = f"({where}) AND {compile_filter(filter)}"
        k = checked_k(k)
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
        if filter is not None and not self._filters_ready:
            self._check_filter_columns(table)
        return table, where, columns, marks, k, acl

    def _check_filter_columns(self, table: Any) -> None:
        """Filters need every row's filter columns: a table made before them (or not yet fully
        migrated) is refused with what to do, rather than silently missing rows."""
        ready = set(table.schema.names) >= _FILTER_COLUMNS
        if ready:
            try:
                ready = table.count_rows(f"{_META_STR} IS NULL") == 0
            except Exception as exc:
                raise StoreError(f"LanceDB search failed: {exc}") from exc
        if not ready:
            raise StoreError(
                f"the index at {self._uri} predates metadata filters: run rag ingest once "
                "(it adds and fills the filter columns) before filtering"
            )
        self._filters_ready = True

    def search(
        self,
        vector: Vectors,
        principals: AbstractSet[str],
        k: int,
        *,
        acl_fresh_after: datetime | None = None,
        filter: Filter | None = None,
    ) -> list[SearchHit]:
        """The ``k`` nearest chunks ``principals`` may read (and ``filter`` admits)."""
        table, where, columns, marks, k, acl = self._prepare(principals, k, acl_fresh_after, filter)
        return self._dense(table, vector, where, acl, columns, marks, k)

    def _dense(
        self,
        table: Any,
        vector: Vectors,
        where: str,
        acl: str,
        columns: list[str],
        marks: dict[str, datetime],
        k: int,
    ) -> list[SearchHit]:
        assert self._info is not None
        if vector.shape != (self._info.dimension,):
            raise StoreError(f"query vector shape {vector.shape} != ({self._info.dimension},)")
        query = (
            table.search(vector.astype(np.float32), vector_column_name="vector")
            .distance_type("cosine")
            .where(where, prefilter=True)
            .select([*columns, "_distance"])
            .limit(k)
        )
        try:
            if self._settings.ann_min_rows:
                how = self._ann_plan(table, acl)
                if how.exact:
                    query = query.bypass_vector_index()
                else:
                    query = query.nprobes(how.nprobes).refine_factor(self._settings.refine_factor)
            rows = query.to_arrow().to_pylist()
        except Exception as exc:
            raise StoreError(f"LanceDB search failed: {exc}") from exc
        return [SearchHit(chunk=_chunk(r, marks), score=1.0 - float(r["_distance"])) for r in rows]

    def _ann_plan(self, table: Any, acl: str) -> ann_index.AnnPlan:
        """Exact search or the partitions to probe, from how many rows ``acl`` admits (counted
        by the ACL scalar indexes; below ``ann_min_rows`` there is no index to plan for)."""
        s = self._settings

        def count(where: str | None) -> int:
            return int(table.count_rows(where))

        total = self._counts.count(None, count)
        if total < s.ann_min_rows:  # no ANN index: no ACL count either
            return ann_index.AnnPlan(exact=False, nprobes=s.nprobes)
        allowed = self._counts.count(acl, count)
        return ann_index.plan(allowed, total, s.nprobes, s.exact_max_rows)

    def search_text(
        self,
        text: str,
        principals: AbstractSet[str],
        k: int,
        *,
        acl_fresh_after: datetime | None = None,
        filter: Filter | None = None,
    ) -> list[SearchHit]:
        """BM25 over chunk text, ACL-filtered (and ``filter``-ed) before ranking."""
        require_principals(principals)
        table, where, columns, marks, k, _ = self._prepare(principals, k, acl_fresh_after, filter)
        return self._keyword(table, text, where, columns, marks, k)

    def _keyword(
        self,
        table: Any,
        text: str,
        where: str,
        columns: list[str],
        marks: dict[str, datetime],
        k: int,
    ) -> list[SearchHit]:
        from lancedb.query import FullTextOperator, MatchQuery

        if not self._has_text_index:
            self._has_text_index = any(i.index_type == "FTS" for i in table.list_indices())
            if not self._has_text_index:
                raise StoreError(
                    f"the index at {self._uri} has no keyword index (it predates BM25 on the "
                    "embedded store): run rag ingest once (it builds it)"
                )
        if not text.strip():
            return []
        query = (
            table.search(_match(text, MatchQuery, FullTextOperator.OR), query_type="fts")
            .where(where, prefilter=True)
            .select(columns)
            .limit(k)
        )
        try:
            rows = query.to_arrow().to_pylist()
        except Exception as exc:
            raise StoreError(f"LanceDB keyword search failed: {exc}") from exc
        return [SearchHit(chunk=_chunk(r, marks), score=float(r["_score"])) for r in rows]

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
        """BM25 and vector search, both ACL-filtered, fused by reciprocal rank."""
        require_principals(principals)
        table, where, columns, marks, k, acl = self._prepare(principals, k, acl_fresh_after, filter)
        depth = max(k, _RRF_DEPTH)
        keyword = self._pool().submit(self._keyword, table, text, where, columns, marks, depth)
        dense = self._dense(table, vector, where, acl, columns, marks, depth)
        return reciprocal_rank_fusion([keyword.result(), dense], k)

    def _pool(self) -> ThreadPoolExecutor:
        """A thread for the keyword half of a hybrid search (LanceDB releases the GIL while it
        searches, so both halves run at once); made on first use."""
        if self._threads is None:
            self._threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lancedb-bm25")
        return self._threads

    def count(self) -> int:
        return int(self._open_for_read().count_rows())

    def chunk_ids(self) -> set[str]:
        """Every chunk id in the index (for audits and tests)."""
        return set(self._open_for_read().to_arrow().column("id").to_pylist())


def _match(text: str, match: Any, operator: Any) -> Any:
    """A BM25 match of any of the words of ``text`` (no query syntax, no fuzziness), like
    OpenSearch's ``match`` query."""
    return match(
        text,
        "text",
        boost=1.0,
        fuzziness=0,
        max_expansions=50,
        operator=operator,
        prefix_length=0,
        document_granularity=None,
    )


def _filter_arrays(chunks: Sequence[Chunk]) -> dict[str, pa.Array]:
    """The filter columns of ``chunks`` (see :func:`rag.filters.filter_view`)."""
    views: list[FilterView] = [filter_view(c) for c in chunks]
    return {
        "uri": pa.array([v.uri for v in views], pa.string()),
        "title": pa.array([v.title for v in views], pa.string()),
        "mime_type": pa.array([v.mime_type for v in views], pa.string()),
        "modified_ms": pa.array([v.modified_ms for v in views], pa.int64()),
        _META_STR: pa.array([json.dumps(v.strings, sort_keys=True) for v in views], _JSON),
        _META_NUM: pa.array([json.dumps(v.numbers, sort_keys=True) for v in views], _JSON),
    }


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
