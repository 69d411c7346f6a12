"""OpenSearch under ACL filters, on a real local node: (a) our efficient filter inside the k-NN
clause versus (b) the post-filtering LangChain's ``OpenSearchVectorSearch`` does by default (a
``bool`` filter around a k-NN query, i.e. filter after the nearest k are found).

Baseline: the same k-NN query with no filter, measured in the same run.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bench.common import DIM, SHARES, K, header, label, line, measure, opensearch_node
from bench.common import corpus as make_corpus
from rag.config import OpenSearchSettings
from rag.identity import PUBLIC
from rag.stores.base import IndexInfo
from rag.stores.opensearch import OpenSearchStore
from rag.stores.opensearch_dsl import compile_acl_filter


def _post_filter_query(q: np.ndarray, principals: frozenset[str]) -> dict[str, Any]:
    # the shape of langchain_community OpenSearchVectorSearch approximate search with
    # boolean_filter: {"bool": {"filter": ..., "must": [{"knn": {...k...}}]}}
    return {
        "size": K,
        "_source": False,
        "query": {
            "bool": {
                "filter": compile_acl_filter(principals),
                "must": [{"knn": {"vector": {"vector": q.tolist(), "k": K}}}],
            }
        },
    }


def run(rows: int, queries: int, data: str = "scifact") -> None:
    corpus = make_corpus(data, rows, queries)
    print(
        f"\n== OpenSearch 2.19 (lucene HNSW m=16, cosine, ef_search=512): {rows:,} chunks x "
        f"{DIM} dims ({data} data), {queries} queries per row, k={K}"
    )
    with opensearch_node() as url:
        settings = OpenSearchSettings(
            hosts=[url], alias="bench", replicas=0, bulk_batch=1000, timeout_seconds=600
        )
        store = OpenSearchStore(settings)
        store.ensure_index(IndexInfo("bench", DIM))
        start = time.perf_counter()
        step = 10_000
        for i in range(0, rows, step):
            store.upsert(corpus.chunks[i : i + step], corpus.vectors[i : i + step])
        store.optimize()
        index = store._target()
        store.client.indices.forcemerge(index=index, max_num_segments=1, request_timeout=3600)
        store.optimize()
        print(
            f"bulk load + refresh + force merge: {time.perf_counter() - start:.1f} s "
            f"({store.count():,} chunks)"
        )
        client = store.client

        def ids(body: dict[str, Any]) -> list[str]:
            return [h["_id"] for h in client.search(index=index, body=body)["hits"]["hits"]]

        def unfiltered(q: np.ndarray) -> list[str]:
            k = max(K, settings.ef_search)
            return ids(
                {
                    "size": K,
                    "_source": False,
                    "query": {"knn": {"vector": {"vector": q.tolist(), "k": k}}},
                }
            )

        for q in corpus.queries[:20]:
            unfiltered(q)
        base = measure(corpus, 1.0, unfiltered)
        ours: dict[float, Any] = {}
        post: dict[float, Any] = {}
        for share in SHARES:
            principals = frozenset({"user:bench", PUBLIC, label(share)})
            ours[share] = measure(
                corpus, share, lambda q, p=principals: [h.chunk.id for h in store.search(q, p, K)]
            )
            post[share] = measure(
                corpus, share, lambda q, p=principals: ids(_post_filter_query(q, p))
            )
        for title, rows_ in (
            ("(a) ours: ACL filter inside the k-NN clause", ours),
            ("(b) LangChain default: bool filter around k-NN (post-filter)", post),
        ):
            print(f"\n{title}\n{header()}")
            print(line("none", base, base))
            for share in SHARES:
                print(line(f"{share:.2%}", rows_[share], base))
