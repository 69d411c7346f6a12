"""Pure functions that compile identities, metadata filters and searches into OpenSearch DSL.

The ACL clause goes *inside* every subquery: into the k-NN clause's ``filter`` (efficient
filtering, so restrictive ACLs still get k results) and into the BM25 query's ``filter``. A
caller's metadata filter is compiled on its own (:func:`compile_filter`, from the typed
:mod:`rag.filters` model only: no raw DSL is ever accepted) and sits *beside* the ACL clause in
the ``filter`` of an outer bool, so it can narrow the results but never replace or weaken the
ACL; ACL and internal fields cannot be named by a filter at all. A caller with many principals
may be filtered by ``terms`` on ``acl_key`` (the keys of the ACLs they may read, see
:mod:`rag.stores.acl_keys`) instead of by their principals; the rest of the filter is the same.

Filterable fields: the keywords ``source``, ``document_id``, ``uri``, ``title``, ``mime_type``,
the long ``modified_ms``, and the metadata as keyword tokens: the key, U+001F, the value.
``meta_str`` holds each value's text, ``meta_num`` each numeric value in an order-preserving hex
encoding of its 64-bit float (so a numeric range is a term range). One field per kind, whatever
the keys: no mapping explosion, no type conflicts between documents.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Final

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
    resolve_field,
    time_ms,
)
from rag.stores.acl_keys import ACL_KEY
from rag.stores.base import checked_principals

ALLOW = "acl_allow"
DENY = "acl_deny"
CHECKED = "acl_checked_ms"
META_STR = "meta_str"
META_NUM = "meta_num"
FILTERS_VERSION = "filters_v"  # 1 on every chunk written with its filter fields
SOURCE_EXCLUDES = ["vector", META_STR, META_NUM]
_SEP: Final = "\x1f"  # never in a filterable key (control characters are refused)
_AFTER_SEP: Final = "\x20"
_BUILTIN_FIELDS: Final = {
    "source": "source",
    "document_id": "document_id",
    "uri": "uri",
    "title": "title",
    "mime_type": "mime_type",
    "modified": "modified_ms",
}


Fresh = tuple[int, Sequence[str]]
"""A freshness bound: epoch ms, and the sources a complete listing confirmed whole since."""


Keys = Sequence[str] | None
"""The caller's readable ACL keys (:mod:`rag.stores.acl_keys`); None: filter by principals."""


def compile_acl_filter(
    principals: AbstractSet[str], fresh: Fresh | None = None, keys: Keys = None
) -> dict[str, Any]:
    """The bool filter admitting documents ``principals`` may read (deny wins); with ``fresh``,
    only chunks whose ACL was confirmed since: written since, or in a source confirmed since.
    With ``keys``, the ACL part is ``terms`` on ``acl_key`` instead (no keys: ``match_none``,
    never no filter); the freshness part is the same."""
    must_not: list[dict[str, Any]] = []
    allowed: list[dict[str, Any]]
    if keys is not None:
        allowed = [{"terms": {ACL_KEY: list(keys)}} if keys else {"match_none": {}}]
    else:
        values = checked_principals(principals)
        allowed = [{"terms": {ALLOW: values}}]
        must_not = [{"terms": {DENY: values}}]
    if fresh is not None:
        since, sources = fresh
        either: list[dict[str, Any]] = [{"range": {CHECKED: {"gte": int(since)}}}]
        if sources:
            either.append({"terms": {"source": sorted(sources)}})
        allowed.append({"bool": {"should": either, "minimum_should_match": 1}})
    if not must_not:
        return {"bool": {"filter": allowed}}
    return {"bool": {"filter": allowed, "must_not": must_not}}


def num_token(key: str, value: float) -> str:
    """``key``'s numeric token: 16 hex digits ordered as the 64-bit floats are."""
    bits: int = struct.unpack(">Q", struct.pack(">d", float(value) + 0.0))[0]  # -0.0 -> 0.0
    bits = bits ^ 0xFFFF_FFFF_FFFF_FFFF if bits >> 63 else bits | 1 << 63
    return f"{key}{_SEP}{bits:016x}"


def str_token(key: str, text: str) -> str:
    """``key``'s text token."""
    return f"{key}{_SEP}{text}"


def filter_fields(view: FilterView) -> dict[str, Any]:
    """The filterable fields of a chunk's document source (None values left out)."""
    fields: dict[str, Any] = {
        "uri": view.uri,
        "title": view.title,
        "mime_type": view.mime_type,
        "modified_ms": view.modified_ms,
        META_STR: [str_token(k, v) for k, v in sorted(view.strings.items())],
        META_NUM: [num_token(k, v) for k, v in sorted(view.numbers.items())],
        FILTERS_VERSION: 1,
    }
    return {name: value for name, value in fields.items() if value is not None}


def compile_filter(node: Filter) -> dict[str, Any]:
    """The bool/term clause of a metadata filter. Pure and deterministic; field names come
    from a fixed map (metadata keys only ever reach their own tokens), values are JSON values."""
    check_size(node)
    return _dsl(node)


def _dsl(node: Filter) -> dict[str, Any]:
    if isinstance(node, And):
        return {"bool": {"filter": [_dsl(child) for child in node.filters]}}
    if isinstance(node, Or):
        return {"bool": {"should": [_dsl(c) for c in node.filters], "minimum_should_match": 1}}
    if isinstance(node, Not):
        return {"bool": {"must_not": [_dsl(node.filter)]}}
    if isinstance(node, Eq):
        field, value = _operand(node.field, node.value)
        return {"term": {field: value}}
    if isinstance(node, In):
        groups: dict[str, list[Any]] = {}
        for raw in node.values:
            field, value = _operand(node.field, raw)
            if value not in groups.setdefault(field, []):
                groups[field].append(value)
        clauses = [{"terms": {field: values}} for field, values in groups.items()]
        if len(clauses) == 1:
            return clauses[0]
        return {"bool": {"should": clauses, "minimum_should_match": 1}}
    if isinstance(node, Prefix):
        field, value = _operand(node.field, node.value)
        return {"prefix": {field: value}}
    bounds = node.bounds()
    field, _ = _operand(node.field, next(iter(bounds.values())))
    body = {op: _operand(node.field, value)[1] for op, value in bounds.items()}
    ref = resolve_field(node.field)
    if ref.kind == "metadata":  # keep the token range inside this key's tokens
        if "gt" not in body and "gte" not in body:
            body["gte"] = f"{ref.name}{_SEP}"
        if "lt" not in body and "lte" not in body:
            body["lt"] = f"{ref.name}{_AFTER_SEP}"
    return {"range": {field: dict(sorted(body.items()))}}


def _operand(field: str, value: Value) -> tuple[str, Any]:
    """The indexed field a comparison with ``value`` reads, and the term it compares with."""
    ref = resolve_field(field)
    if ref.kind == "builtin":
        name = _BUILTIN_FIELDS[ref.name]
        return name, time_ms(value) if ref.name == "modified" else value
    if isinstance(value, bool):
        return META_STR, str_token(ref.name, "true" if value else "false")
    if isinstance(value, int | float):
        return META_NUM, num_token(ref.name, float(value))
    assert isinstance(value, str)
    return META_STR, str_token(ref.name, value)


def search_filter(
    principals: AbstractSet[str],
    fresh: Fresh | None = None,
    filter: Filter | None = None,
    keys: Keys = None,
) -> dict[str, Any]:
    """The ACL clause, and a metadata filter beside it in the ``filter`` of an outer bool."""
    acl = compile_acl_filter(principals, fresh, keys)
    if filter is None:
        return acl
    return {"bool": {"filter": [acl, compile_filter(filter)]}}


def knn_query(
    vector: Sequence[float],
    principals: AbstractSet[str],
    k: int,
    ef_search: int,
    fresh: Fresh | None = None,
    filter: Filter | None = None,
    keys: Keys = None,
    *,
    exact: bool = False,
) -> dict[str, Any]:
    """A k-NN search with the ACL filter (and a metadata filter) inside the k-NN clause."""
    clause = search_filter(principals, fresh, filter, keys)
    return dense_query([float(x) for x in vector], clause, k, ef_search, exact=exact)


def dense_query(
    vector: list[float], clause: dict[str, Any], k: int, ef_search: int, *, exact: bool
) -> dict[str, Any]:
    """The ``k`` nearest chunks that ``clause`` (the whole search filter: ACL, freshness,
    metadata) admits: through the HNSW graph with the clause inside the k-NN query, or with
    ``exact``, every admitted vector scored by the k-NN plugin's ``knn_score`` script (which
    scores cosinesimil as (1 + cos) / 2, as the lucene engine does)."""
    query: dict[str, Any]
    if exact:
        script = {
            "source": "knn_score",
            "lang": "knn",
            "params": {"field": "vector", "query_value": vector, "space_type": "cosinesimil"},
        }
        query = {"script_score": {"query": {"bool": {"filter": clause}}, "script": script}}
    else:
        query = {"knn": {"vector": {"vector": vector, "k": max(k, ef_search), "filter": clause}}}
    return {"size": k, "_source": {"excludes": SOURCE_EXCLUDES}, "query": query}


EXACT_MAX_SHARE: Final = 0.2


def exact_plan(allowed: int, total: int, max_rows: int) -> bool:
    """Whether a k-NN search whose filter admits ``allowed`` of the index's ``total`` chunks
    should score every admitted vector instead of walking the HNSW graph. Pure.

    Lucene's filtered HNSW search has to visit about 1/share nodes per result it keeps and,
    per segment, gives up past as many visits as the filter admits and then scores them all
    anyway; between a few percent and ~20% of the index it pays for both (at 1M chunks on 2
    cores, a 10% ACL: p95 249 ms through the graph, 93 ms exact, 115 ms unfiltered). Broad
    filters stay on the graph (50%: 1.27x unfiltered), as does any filter admitting more than
    ``max_rows`` (exact costs ~1 us per admitted chunk; 0 turns exact search off).
    """
    return max_rows > 0 and allowed <= max_rows and allowed <= total * EXACT_MAX_SHARE


def count_key(index: str, clause: dict[str, Any] | None) -> str:
    """What a count of ``clause`` over ``index`` is cached under (None: the whole index)."""
    return index if clause is None else f"{index}\n{json.dumps(clause, sort_keys=True)}"


def bm25_query(
    text: str,
    principals: AbstractSet[str],
    k: int,
    fresh: Fresh | None = None,
    filter: Filter | None = None,
    keys: Keys = None,
) -> dict[str, Any]:
    """A BM25 search on the chunk text, ACL-filtered (and metadata-filtered) in the same bool
    query: the ACL clause and the filter are separate entries of its ``filter``."""
    clauses = [compile_acl_filter(principals, fresh, keys)]
    if filter is not None:
        clauses.append(compile_filter(filter))
    return {
        "size": k,
        "_source": {"excludes": SOURCE_EXCLUDES},
        "query": {
            "bool": {"must": [{"match": {"text": {"query": text}}}], "filter": clauses},
        },
    }


FILTER_MAPPING: Final[dict[str, Any]] = {
    "uri": {"type": "keyword"},
    "title": {"type": "keyword"},
    "mime_type": {"type": "keyword"},
    "modified_ms": {"type": "long"},
    META_STR: {"type": "keyword"},
    META_NUM: {"type": "keyword"},
    FILTERS_VERSION: {"type": "byte"},
}
"""The filterable fields (added to indexes made before them by ``put_mapping``)."""


def index_body(
    dimension: int,
    model_id: str,
    *,
    shards: int,
    replicas: int,
    m: int,
    ef_construction: int,
    text_analyzer: str = "english",
) -> dict[str, Any]:
    """Settings and mappings of one index version (its model is recorded in ``_meta``)."""
    keyword = {"type": "keyword"}
    return {
        "settings": {
            "index": {"knn": True, "number_of_shards": shards, "number_of_replicas": replicas}
        },
        "mappings": {
            "dynamic": "strict",
            "_meta": {"model_id": model_id, "dimension": dimension, "schema_version": 1},
            "properties": {
                "chunk_id": keyword,
                "document_id": keyword,
                "source": keyword,
                "ordinal": {"type": "integer"},
                "text": {"type": "text", "analyzer": text_analyzer},
                "token_count": {"type": "integer"},
                ALLOW: keyword,
                DENY: keyword,
                CHECKED: {"type": "long"},
                ACL_KEY: keyword,
                **FILTER_MAPPING,
                "citation": {"type": "object", "enabled": False},
                "metadata": {"type": "object", "enabled": False},
                "vector": {
                    "type": "knn_vector",
                    "dimension": dimension,
                    "method": {
                        "name": "hnsw",
                        "engine": "lucene",
                        "space_type": "cosinesimil",
                        "parameters": {"m": m, "ef_construction": ef_construction},
                    },
                },
            },
        },
    }
