"""The ACL registry of a LanceDB chunks table: a table beside it (``<table>__acls``) holding each
distinct ACL once, by key (see :mod:`rag.stores.acl_keys`). Rows are content-addressed: inserted
once (before the chunk rows that reference them), never changed."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Set as AbstractSet
from typing import Any, Final

import pyarrow as pa

from rag.errors import RagError, StoreError
from rag.models import Acl
from rag.stores.acl_keys import ACL_KEY, AclKeyOptions, AclKeyState, RegistryRow, acl_key

SCHEMA: Final = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("allow", pa.list_(pa.string()), nullable=False),
        pa.field("deny", pa.list_(pa.string()), nullable=False),
    ]
)

_BACKFILL: Final = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("allow", pa.list_(pa.string()), nullable=False),
        pa.field("deny", pa.list_(pa.string()), nullable=False),
        pa.field(ACL_KEY, pa.string()),
    ]
)
_UNCHANGED: Final = (
    f"target.{ACL_KEY} IS NULL AND target.allow = source.allow AND target.deny = source.deny"
)
"""A backfilled key lands only on a row still unkeyed and still holding the ACL it was
computed from: a row whose ACL a concurrent writer changed keeps what that writer wrote."""


class LanceDBAclRegistry:
    """The registry table of one chunks table, and what this process knows of it."""

    def __init__(self, connect: Callable[[], Any], table: str, options: AclKeyOptions) -> None:
        self._connect = connect
        self.name = f"{table}__acls"
        self.state = AclKeyState(options)
        self._table: Any = None

    def _open(self) -> Any:
        if self._table is None:
            self._table = self._connect().open_table(self.name)
        return self._table

    def create(self, names: AbstractSet[str]) -> None:
        """Create the table if ``names`` (the database's tables) lacks it (a writer's job)."""
        if self.name not in names:
            self._connect().create_table(self.name, schema=SCHEMA, exist_ok=True)
        self.state.reset()

    def register(self, acls: dict[str, Acl]) -> None:
        """Insert the ACLs not yet known to be registered (existing keys are left alone)."""
        new = self.state.unregistered(acls)
        if not new:
            return
        rows = pa.table(
            {
                "key": list(new),
                "allow": [sorted(a.allow) for a in new.values()],
                "deny": [sorted(a.deny) for a in new.values()],
            },
            schema=SCHEMA,
        )
        try:
            self._open().merge_insert("key").when_not_matched_insert_all().execute(rows)
        except Exception as exc:
            raise StoreError(f"LanceDB ACL registry write failed: {exc}") from exc
        self.state.registered(new)

    def keyed(self, chunks: Any, names: Callable[[], set[str]]) -> bool:
        """Whether ``chunks`` may be searched by key: every row keyed, the registry there."""

        def check() -> bool:
            try:
                return (
                    ACL_KEY in chunks.schema.names
                    and self.name in names()
                    and chunks.count_rows(f"{ACL_KEY} IS NULL") == 0
                )
            except Exception as exc:
                raise StoreError(f"LanceDB search failed: {exc}") from exc

        return self.state.ready(check)

    def readable(self, principals: AbstractSet[str]) -> tuple[str, ...]:
        """The keys ``principals`` may read (cached: see :mod:`rag.stores.acl_keys`)."""

        def rows() -> list[RegistryRow]:
            data = self._open().to_arrow()
            columns = (data.column(c).to_pylist() for c in ("key", "allow", "deny"))
            return list(zip(*columns, strict=True))

        try:
            return self.state.cache.keys(principals, lambda: int(self._open().count_rows()), rows)
        except RagError:
            raise  # an invalid principal is refused as on the principal path
        except Exception as exc:
            raise StoreError(f"LanceDB ACL registry read failed: {exc}") from exc

    def backfill(self, chunks: Any, batch: int = 10_000) -> int:
        """Key the rows written before ACL keys (registering their ACLs first); returns rows
        keyed. A row whose ACL changed meanwhile is skipped (it stays unkeyed, so the table
        stays on the principal path until a later writer keys it)."""
        keyed, seen = 0, set[str]()
        try:
            while True:
                rows = (
                    chunks.search()
                    .where(f"{ACL_KEY} IS NULL")
                    .select(["id", "allow", "deny"])
                    .limit(batch)
                    .to_arrow()
                )
                ids = rows.column("id").to_pylist()
                if not ids or seen.issuperset(ids):
                    break
                seen.update(ids)
                keyed += self.key_rows(chunks, rows)
        except RagError:
            raise
        except Exception as exc:
            raise StoreError(f"LanceDB ACL key backfill failed: {exc}") from exc
        self.state.reset()
        return keyed

    def key_rows(self, chunks: Any, rows: pa.Table) -> int:
        """Write the keys of ``rows`` (id, allow, deny as read) where they still apply."""
        allow, deny = rows.column("allow").to_pylist(), rows.column("deny").to_pylist()
        acls = [
            Acl(allow=frozenset(a), deny=frozenset(d)) for a, d in zip(allow, deny, strict=True)
        ]
        self.register({acl_key(acl): acl for acl in acls})
        data = pa.table(
            {
                "id": rows.column("id"),
                "allow": rows.column("allow"),
                "deny": rows.column("deny"),
                ACL_KEY: [acl_key(acl) for acl in acls],
            },
            schema=_BACKFILL,
        )
        result = chunks.merge_insert("id").when_matched_update_all(where=_UNCHANGED).execute(data)
        return int(getattr(result, "num_updated_rows", len(acls)))
