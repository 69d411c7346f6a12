"""OpenSearch under ACL filters, on a real local node: (a) our efficient filter inside the k-NN
clause versus (b) the post-filtering LangChain's ``OpenSearchVectorSearch`` does by default (a
``bool`` filter around a k-NN query, i.e. filter after the nearest k are found); the bulk load
rate through the store's own upsert (refresh off during the load), the refresh and force-merge
time, and the node's memory (heap, off-heap, RSS) from ``_nodes/stats`` and /proc.

Baseline: the same k-NN query with no filter, measured in the same run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from bench.common import (
    BASE,
    DIM,
    SHARES,
    Corpus,
    K,
    header,
    label,
    line,
    measure_all,
    opensearch_memory,
    opensearch_node,
    rss_mib,
    share_truth,
)
from bench.common import corpus as make_corpus
from rag.config import OpenSearchSettings
from rag.identity import PUBLIC
from rag.stores.base import IndexInfo
from rag.stores.opensearch import OpenSearchStore
from rag.stores.opensearch_dsl import compile_acl_filter

STEP = 10_000  # chunks per upsert call (bulk requests of settings.bulk_batch)
ALIAS = "bench"
Search = Callable[[np.ndarray], list[str]]


def settings_for(url: str, ef_search: int = 512, **more: int) -> OpenSearchSettings:
    return OpenSearchSettings(
        hosts=[url],
        alias=ALIAS,
        replicas=0,
        bulk_batch=1000,
        timeout_seconds=3600,
        ef_search=ef_search,
        **more,
    )


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


def _ours(store: OpenSearchStore, principals: frozenset[str]) -> Search:
    def search(q: np.ndarray) -> list[str]:
        return [h.chunk.id for h in store.search(q, principals, K)]

    return search


def _unfiltered(ids: Callable[[dict[str, Any]], list[str]], ef: int) -> Search:
    def search(q: np.ndarray) -> list[str]:
        knn = {"vector": {"vector": q.tolist(), "k": max(K, ef)}}
        return ids({"size": K, "_source": False, "query": {"knn": knn}})

    return search


def _post(ids: Callable[[dict[str, Any]], list[str]], principals: frozenset[str]) -> Search:
    def search(q: np.ndarray) -> list[str]:
        return ids(_post_filter_query(q, principals))

    return search


def load(url: str, corpus: Corpus, segments: int, threads: int = 1) -> OpenSearchStore:
    """The store behind ``url`` holding ``corpus``: bulk-loaded with refresh off (restored to 1 s
    after) by ``threads`` concurrent ``upsert`` calls, refreshed, force-merged to ``segments``
    (0: left to the merge policy); reused when the index already holds ``corpus.rows`` chunks."""
    store = OpenSearchStore(settings_for(url))
    if store.index_info() is not None and store.count() == corpus.rows:
        print(f"reusing the loaded index at {url} ({corpus.rows:,} chunks)")
        return store
    store.ensure_index(IndexInfo("bench", DIM))
    index = store._target()
    client = store.client
    client.indices.put_settings(index=index, body={"index": {"refresh_interval": "-1"}})
    start = time.perf_counter()

    def upsert(i: int) -> int:
        store.upsert(corpus.chunks(i, i + STEP), corpus.vectors[i : i + STEP])
        return min(i + STEP, corpus.rows)

    with ThreadPoolExecutor(threads) as pool:
        for done_rows in pool.map(upsert, range(0, corpus.rows, STEP)):
            if done_rows % 50_000 == 0:
                done = time.perf_counter() - start
                print(
                    f"  {done_rows:,} chunks in {done:.0f} s ({done_rows / done:,.0f}/s)",
                    flush=True,
                )
    loaded = time.perf_counter() - start
    start = time.perf_counter()
    client.indices.put_settings(index=index, body={"index": {"refresh_interval": "1s"}})
    store.optimize()  # refresh
    refreshed = time.perf_counter() - start
    merged = 0.0
    if segments:
        start = time.perf_counter()
        client.indices.forcemerge(index=index, max_num_segments=segments, request_timeout=7200)
        store.optimize()
        merged = time.perf_counter() - start
    print(
        f"bulk load ({threads} x upsert, {STEP:,} per call, bulk requests of 1,000, refresh off): "
        f"{loaded:.1f} s = {corpus.rows / loaded:,.0f} chunks/s; refresh {refreshed:.1f} s; "
        f"force merge to {segments or 'natural'} segment(s) {merged:.1f} s "
        f"({store.count():,} chunks)",
        flush=True,
    )
    return store


def run(
    rows: int,
    queries: int,
    data: str = "scifact",
    *,
    base: int = BASE,
    heap: str = "4g",
    port: int | None = None,
    keep: bool = False,
    segments: int = 1,
    ef_searches: Sequence[int] = (512,),
    post: bool = True,
    threads: int = 1,
    corpus: Corpus | None = None,
) -> None:
    """``port``/``keep``: the node's port, and leave it running with its index (reused by
    later runs, and by ``python -m bench groups``/``load``)."""
    corpus = corpus or make_corpus(data, rows, queries, base)
    print(
        f"\n== OpenSearch 2.19 (lucene HNSW m=16, ef_construction=128, cosine; heap {heap}): "
        f"{rows:,} chunks x {DIM} dims ({corpus.description}), {queries} queries per row, k={K}",
        flush=True,
    )
    with opensearch_node(heap, port, keep) as url:
        store = load(url, corpus, segments, threads)
        client, index = store.client, store._target()
        print(f"node after load: {opensearch_memory(client, url)}")

        def ids(body: dict[str, Any]) -> list[str]:
            return [h["_id"] for h in client.search(index=index, body=body)["hits"]["hits"]]

        configs: dict[str, tuple[list[set[str]], Search]] = {}
        for ef in ef_searches:
            configs[f"none ef={ef}"] = (share_truth(corpus, 1.0), _unfiltered(ids, ef))
            tuned = OpenSearchStore(settings_for(url, ef))
            for share in SHARES:
                principals = frozenset({"user:bench", PUBLIC, label(share)})
                configs[f"{share:.2%} ef={ef}"] = (
                    share_truth(corpus, share),
                    _ours(tuned, principals),
                )
                if ef == ef_searches[-1]:  # the same filter, never searched exactly
                    configs[f"{share:.2%} graph"] = (
                        share_truth(corpus, share),
                        _ours(OpenSearchStore(settings_for(url, ef, exact_max_rows=0)), principals),
                    )
                if post and ef == ef_searches[-1]:
                    configs[f"{share:.2%} post"] = (
                        share_truth(corpus, share),
                        _post(ids, principals),
                    )
        for q in corpus.queries[:20]:  # warm-up
            for _, search in configs.values():
                search(q)
        results = measure_all(corpus, configs)
        for ef in ef_searches:
            base_row = results[f"none ef={ef}"]
            print(f"\n(a) ours: ACL filter inside the k-NN clause, ef_search={ef}\n{header()}")
            print(line("none", base_row, base_row))
            for share in SHARES:
                print(line(f"{share:.2%}", results[f"{share:.2%} ef={ef}"], base_row))
        print(f"\n(a') ours, the HNSW graph only (exact_max_rows=0), ef_search={ef}\n{header()}")
        print(line("none", base_row, base_row))
        for share in SHARES:
            print(line(f"{share:.2%}", results[f"{share:.2%} graph"], base_row))
        if post:
            print(f"\n(b) LangChain default: bool filter around k-NN (post-filter)\n{header()}")
            print(line("none", base_row, base_row))
            for share in SHARES:
                print(line(f"{share:.2%}", results[f"{share:.2%} post"], base_row))
        print(f"\nnode after the searches: {opensearch_memory(client, url)}")
        print(f"bench process RSS {rss_mib()[0]:,.0f} MiB")
