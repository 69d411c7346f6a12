"""The ACL registry of an OpenSearch index: a side index (``<physical index>-acls``) holding each
distinct ACL once, its ``_id`` the ACL's key (see :mod:`rag.stores.acl_keys`). Rows are
content-addressed, so writing one again changes nothing; they are written (and refreshed)
before the chunks that reference them. The request bodies here are shared by the sync and the
async store."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from rag.errors import StoreError
from rag.models import Acl
from rag.stores.acl_keys import ACL_KEY, RegistryRow
from rag.stores.opensearch_side import SideIndex

SUFFIX: Final = "acls"
PAGE: Final = 5000
MAX_TERMS: Final = 65_536  # index.max_terms_count: past it, the principal path is used
UNKEYED: Final = {"bool": {"must_not": [{"exists": {"field": ACL_KEY}}]}}
"""Chunks written before ACL keys (an index with any is searched by principals)."""
_MAPPINGS: Final = {
    "dynamic": "strict",
    "properties": {
        "key": {"type": "keyword"},
        "allow": {"type": "keyword", "index": False},
        "deny": {"type": "keyword", "index": False},
    },
}


def registry_name(index: str) -> str:
    return f"{index}-{SUFFIX}"


def page_body(after: str | None) -> dict[str, Any]:
    """One page of registry rows, in key order (search_after: no scroll context to leak)."""
    body: dict[str, Any] = {"size": PAGE, "sort": [{"key": "asc"}], "query": {"match_all": {}}}
    if after is not None:
        body["search_after"] = [after]
    return body


def page_rows(response: dict[str, Any]) -> tuple[list[RegistryRow], str | None]:
    """The rows of a page, and the key to continue after (None: the last page)."""
    hits = response["hits"]["hits"]
    rows: list[RegistryRow] = [
        (h["_source"]["key"], h["_source"]["allow"], h["_source"]["deny"]) for h in hits
    ]
    return rows, (rows[-1][0] if len(hits) == PAGE else None)


def read_registry(search: Callable[[dict[str, Any]], dict[str, Any]]) -> list[RegistryRow]:
    """Every registry row, page by page (``search`` runs a body on the registry index)."""
    found: list[RegistryRow] = []
    after: str | None = None
    while True:
        rows, after = page_rows(search(page_body(after)))
        found.extend(rows)
        if after is None:
            return found


def usable(keys: Sequence[str]) -> Sequence[str] | None:
    """``keys`` if a ``terms`` clause takes them; None (the principal path) past its limit."""
    return keys if len(keys) <= MAX_TERMS else None


def _as_is(client: Any) -> Any:
    return client


@dataclass(frozen=True)
class Retry:
    """How registry writes retry temporary failures (the store's bulk settings), and the
    client wrapper that makes 502-504 and lost connections count as temporary."""

    max_retries: int = 3
    initial_backoff: float = 0.5
    max_backoff: float = 10.0
    client: Callable[[Any], Any] = _as_is


class OpenSearchAclRegistry(SideIndex):
    def __init__(self, client: Callable[[], Any], index: Callable[[], str], replicas: int) -> None:
        super().__init__(client, index, replicas, suffix=SUFFIX, mappings=_MAPPINGS)

    def register(self, acls: dict[str, Acl], retry: Retry = Retry()) -> None:
        """Write ``acls`` (by key) and refresh, so a reader finds them before any chunk.
        Temporary rejections (429, 502-504, a lost connection) are resent with the chunk
        writes' backoff and budget; anything left unwritten is a :class:`StoreError`, and the
        chunks are not written (a chunk whose key is missing would only be hidden)."""
        if not acls:
            return
        from opensearchpy.helpers import streaming_bulk

        name = self._name()
        actions = [
            {
                "_index": name,
                "_id": key,
                "_source": {"key": key, "allow": sorted(acl.allow), "deny": sorted(acl.deny)},
            }
            for key, acl in sorted(acls.items())
        ]
        try:
            failed = [
                result
                for _, result in streaming_bulk(
                    retry.client(self._client()),
                    actions,
                    chunk_size=len(actions),
                    raise_on_error=False,
                    max_retries=retry.max_retries,
                    initial_backoff=retry.initial_backoff,  # type: ignore[arg-type]
                    max_backoff=retry.max_backoff,  # type: ignore[arg-type]
                    yield_ok=False,
                    refresh="true",
                )
            ]
        except Exception as exc:
            raise StoreError(f"OpenSearch ACL registry write failed: {exc}") from exc
        if failed:
            raise StoreError(f"ACL registry write failed for {len(failed)} ACLs: {failed[0]}")


KEY_SCRIPT: Final = (
    "if (ctx._source.acl_key == null && ctx._source.acl_allow == params.allow"
    " && ctx._source.acl_deny == params.deny) { ctx._source.acl_key = params.key }"
    " else { ctx.op = 'noop' }"
)
"""A backfilled key lands only on a chunk still unkeyed and still holding the ACL it was
computed from: a chunk whose ACL a concurrent writer changed keeps what that writer wrote."""


def key_update(source: dict[str, Any]) -> tuple[Acl, dict[str, Any]]:
    """The ACL of an unkeyed chunk's ``_source`` (its ``acl_allow``/``acl_deny`` as read), and
    the scripted update that keys it if they are unchanged."""
    allow, deny = source.get("acl_allow"), source.get("acl_deny")
    acl = Acl(allow=frozenset(_values(allow)), deny=frozenset(_values(deny)))
    params = {"allow": allow, "deny": deny, "key": acl.digest()}
    return acl, {"script": {"source": KEY_SCRIPT, "lang": "painless", "params": params}}


def _values(field: Any) -> list[str]:
    if field is None:
        return []
    return [str(v) for v in field] if isinstance(field, list) else [str(field)]
