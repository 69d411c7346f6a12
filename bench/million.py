"""Issue 16 §1 driver: both stores at one size, one corpus built once for both.

``python -m bench million -- --rows 1000000 --queries 100 --base 4000 --lancedb /tmp/big/lance
--port 9295 --keep``: LanceDB (kept at --lancedb), then OpenSearch (left running on --port with
--keep), so ``python -m bench groups`` and ``python -m bench load`` reuse both indexes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench import opensearch_acl, store_acl
from bench.common import BASE
from bench.common import corpus as make_corpus


def _pairs(text: str) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in (p.split(":") for p in text.split(",") if p)]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench million --")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--data", choices=["scifact", "gaussian"], default="scifact")
    parser.add_argument("--base", type=int, default=BASE, help="real sentence vectors")
    parser.add_argument("--stores", default="lancedb,opensearch")
    parser.add_argument("--lancedb", type=Path, help="keep the LanceDB table here (reused)")
    parser.add_argument(
        "--probes", default="", help="more LanceDB nprobes:refine_factor, e.g. 128:20,256:30"
    )
    parser.add_argument("--port", type=int, help="the OpenSearch node's port")
    parser.add_argument("--heap", default="4g")
    parser.add_argument("--keep", action="store_true", help="leave the node and index up")
    parser.add_argument("--segments", type=int, default=1, help="force merge (0: none)")
    parser.add_argument("--ef", default="512", help="ef_search values, e.g. 100,256,512")
    parser.add_argument("--threads", type=int, default=1, help="concurrent bulk loaders")
    parser.add_argument("--no-post", action="store_true", help="skip the post-filter table")
    args = parser.parse_args(argv)
    stores = set(args.stores.split(","))
    corpus = make_corpus(args.data, args.rows, args.queries, args.base)
    if "lancedb" in stores:
        store_acl.run(
            args.rows,
            args.queries,
            False,
            base=args.base,
            path=args.lancedb,
            probes=_pairs(args.probes),
            corpus=corpus,
        )
    if "opensearch" in stores:
        opensearch_acl.run(
            args.rows,
            args.queries,
            base=args.base,
            heap=args.heap,
            port=args.port,
            keep=args.keep,
            segments=args.segments,
            ef_searches=[int(e) for e in args.ef.split(",")],
            post=not args.no_post,
            threads=args.threads,
            corpus=corpus,
        )
