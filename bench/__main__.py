"""Run every benchmark: ``python -m bench [--rows N] [--queries Q]``."""

from __future__ import annotations

import argparse

from bench import store_acl


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ann", action="store_true", help="also benchmark the IVF-HNSW index")
    args = parser.parse_args()
    store_acl.run(rows=args.rows, queries=args.queries, ann=args.ann)


if __name__ == "__main__":
    main()
