"""Run the benchmarks: ``python -m bench [store|opensearch|sync|embeddings|identity|all|NAME]``.

Any other NAME runs ``bench/NAME.py``'s ``main(args)`` (its own options after ``--``).
SciFact quality figures come from ``rag eval --suite scifact-nightly`` (see evaluation/)."""

from __future__ import annotations

import argparse
import importlib
import sys


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument(
        "which",
        nargs="*",
        default=["store", "opensearch", "identity", "parsing"],
        help="store, opensearch, sync, embeddings, identity, all, or a bench/NAME.py module",
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
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args, extra = parser.parse_args(argv[:cut]), argv[cut + 1 :]
    which = (
        {"store", "opensearch", "sync", "embeddings", "identity", "parsing"}
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
    for name in sorted(which - {"store", "opensearch", "sync", "embeddings", "identity", "all"}):
        if not name.isidentifier():
            parser.error(f"unknown benchmark {name!r}")
        importlib.import_module(f"bench.{name}").main(extra)


if __name__ == "__main__":
    main()
