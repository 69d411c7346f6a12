"""Run the benchmarks: ``python -m bench [store|opensearch|sync|embeddings|identity|all]``.

SciFact quality figures come from ``rag eval --suite scifact-nightly`` (see evaluation/)."""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument(
        "which",
        nargs="*",
        default=["store", "opensearch", "identity"],
        choices=["store", "opensearch", "sync", "embeddings", "identity", "all"],
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ann", action="store_true", help="also the embedded IVF-HNSW index")
    parser.add_argument(
        "--data",
        choices=["scifact", "gaussian"],
        default="scifact",
        help="scifact: real sentences embedded by the model (cached); "
        "gaussian: clustered random vectors, a hard case for HNSW",
    )
    args = parser.parse_args()
    which = (
        {"store", "opensearch", "sync", "embeddings", "identity"}
        if "all" in args.which
        else set(args.which)
    )
    if "store" in which:
        from bench import store_acl

        store_acl.run(rows=args.rows, queries=args.queries, ann=args.ann, data=args.data)
    if "opensearch" in which:
        from bench import opensearch_acl

        opensearch_acl.run(rows=args.rows, queries=args.queries, data=args.data)
    if "sync" in which:
        from bench import sync

        sync.run()
    if "embeddings" in which:
        from bench import embeddings

        embeddings.run()
    if "identity" in which:
        from bench import identity

        identity.run()


if __name__ == "__main__":
    main()
