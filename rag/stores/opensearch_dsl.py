"""Pure functions that compile identities and searches into OpenSearch query DSL.

The ACL clause goes *inside* every subquery: into the k-NN clause's ``filter`` (efficient
filtering, so restrictive ACLs still get k results) and into the BM25 query's ``filter``. No
caller-supplied clause can replace it: the functions take no user filter at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from rag.stores.base import checked_principals

ALLOW = "acl_allow"
DENY = "acl_deny"
CHECKED = "acl_checked_ms"
SOURCE_EXCLUDES = ["vector"]


Fresh = tuple[int, Sequence[str]]
"""A freshness bound: epoch ms, and the sources a complete listing confirmed whole since."""


def compile_acl_filter(principals: AbstractSet[str], fresh: Fresh | None = None) -> dict[str, Any]:
    """The bool filter admitting documents ``principals`` may read (deny wins); with ``fresh``,
    only chunks whose ACL was confirmed since: written since, or in a source confirmed since."""
    values = checked_principals(principals)
    allowed: list[dict[str, Any]] = [{"terms": {ALLOW: values}}]
    if fresh is not None:
        since, sources = fresh
        either: list[dict[str, Any]] = [{"range": {CHECKED: {"gte": int(since)}}}]
        if sources:
            either.append({"terms": {"source": sorted(sources)}})
        allowed.append({"bool": {"should": either, "minimum_should_match": 1}})
    return {"bool": {"filter": allowed, "must_not": [{"terms": {DENY: values}}]}}


def knn_query(
    vector: Sequence[float],
    principals: AbstractSet[str],
    k: int,
    ef_search: int,
    fresh: Fresh | None = None,
) -> dict[str, Any]:
    """A k-NN search with the ACL filter inside the k-NN clause."""
    return {
        "size": k,
        "_source": {"excludes": SOURCE_EXCLUDES},
        "query": {
            "knn": {
                "vector": {
                    "vector": [float(x) for x in vector],
                    "k": max(k, ef_search),
                    "filter": compile_acl_filter(principals, fresh),
                }
            }
        },
    }


def bm25_query(
    text: str, principals: AbstractSet[str], k: int, fresh: Fresh | None = None
) -> dict[str, Any]:
    """A BM25 search on the chunk text, ACL-filtered in the same bool query."""
    return {
        "size": k,
        "_source": {"excludes": SOURCE_EXCLUDES},
        "query": {
            "bool": {
                "must": [{"match": {"text": {"query": text}}}],
                "filter": [compile_acl_filter(principals, fresh)],
            }
        },
    }


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
