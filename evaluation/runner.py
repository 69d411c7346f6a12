"""Run an evaluation suite through our own pipeline and stores, per retrieval mode and persona.

For each persona: retrieval quality on what it may see (nDCG@10, Recall@100, MRR@10 at document
level; ragas ID-based context precision/recall on the top 10) and its leak count: a returned chunk
whose document the persona may not read (by the overlay, not by the index) is a leak. The verdict
fails on any leak, on a threshold miss, or on a regression beyond tolerance against the last run.

A run's ``progress(done, total)`` counts steps: the documents the suite's ingest processes, then
one per query per persona per mode, then (when LLM metrics are configured) one per judged query
per mode, reported as each mode's LLM scores come back.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from evaluation.beir_connector import BeirConnector
from evaluation.datasets import BeirDataset, default_eval_root, load_beir
from evaluation.history import append_history, load_history
from evaluation.metrics import evaluate_run
from evaluation.personas import Overlay, Persona, make_personas
from evaluation.ragas_metrics import LLM_SKIP_MESSAGE, id_based_scores, llm_metrics_configured
from evaluation.suite import Mode, Suite, first_stage, reranked
from rag.config import Settings
from rag.embeddings import build_embedder
from rag.errors import RagError
from rag.pipeline import Progress, ingest, with_cache
from rag.rerank import Reranker, build_reranker
from rag.retrieval.core import Retriever
from rag.sources import derive_settings
from rag.stores import build_store

log = logging.getLogger(__name__)
MEASURES = ("nDCG@10", "R@100", "RR@10")
LLM_SAMPLE: Final = 20
"""Judged queries per mode that the LLM-judged metrics score (Bedrock costs money)."""


@dataclass
class PersonaResult:
    persona: str
    selectivity: float
    queries: int
    leaks: int
    metrics: dict[str, float]


@dataclass
class ModeResult:
    mode: Mode
    personas: list[PersonaResult]

    def persona(self, name: str) -> PersonaResult:
        return next(p for p in self.personas if p.persona == name)


@dataclass
class SuiteResult:
    suite: str
    started_at: str
    seconds: float
    documents: int
    queries: int
    modes: list[ModeResult]
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    previous: dict[str, Any] | None = None
    feedback: list[dict[str, Any]] = field(default_factory=list)
    """Users' helpful rate per source and mode (from the audit trail), when attached."""

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def leaks(self) -> int:
        return sum(p.leaks for m in self.modes for p in m.personas)

    def headline(self) -> dict[str, float]:
        """mode.metric for the persona that may read everything (the unfiltered quality)."""
        return {f"{m.mode}.{k}": v for m in self.modes for k, v in m.persona("all").metrics.items()}

    def to_json(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "started_at": self.started_at,
            "seconds": round(self.seconds, 2),
            "documents": self.documents,
            "queries": self.queries,
            "passed": self.passed,
            "leaks": self.leaks,
            "failures": self.failures,
            "notes": self.notes,
            "headline": self.headline(),
            "previous": self.previous,
            "feedback": self.feedback,
            "modes": [
                {"mode": m.mode, "personas": [p.__dict__ for p in m.personas]} for m in self.modes
            ],
        }


def _subset(data: BeirDataset, suite: Suite) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    queries = dict(list(data.queries.items())[: suite.queries or None])
    if not suite.subset_docs:
        return data.corpus, queries
    judged = {d for q in queries for d in data.qrels.get(q, {}) if d in data.corpus}
    rest = sorted(set(data.corpus) - judged)
    rng = random.Random(suite.seed)  # noqa: S311 - reproducible sampling
    extra = rng.sample(rest, max(0, min(len(rest), suite.subset_docs - len(judged))))
    return {d: data.corpus[d] for d in sorted(judged | set(extra))}, queries


def suite_settings(suite: Suite, work_dir: Path, base: Settings | None = None) -> Settings:
    """The settings a suite runs with: ``base`` (default: the environment) with the suite's
    data dir, embedder, chunking, store and k; secrets in ``base`` are kept."""
    base = base or Settings()
    return derive_settings(
        base,
        {
            "data_dir": work_dir / suite.name,
            "embedding": {
                "provider": suite.embedder,
                "cache_path": work_dir / "embedding-cache.sqlite",  # shared by suites
            },
            "chunking": {
                "max_tokens": suite.chunk_tokens,
                "overlap_tokens": min(base.chunking.overlap_tokens, suite.chunk_tokens // 4),
            },
            "store": {"backend": suite.store, "opensearch": {"alias": f"eval-{suite.name}"}},
            "retrieval": {"top_k": suite.k},
        },
    )


class _Steps:
    """One ``progress(done, total)`` over a run: the ingest's documents, then ``later`` steps."""

    def __init__(self, progress: Progress | None, later: int) -> None:
        self._progress = progress
        self._later = later
        self._ingested = 0  # the ingest's total, as last reported
        self._done = 0  # steps after the ingest

    def ingest(self, done: int, total: int) -> None:
        self._ingested = total
        if self._progress is not None:
            self._progress(done, total + self._later)

    def advance(self, steps: int = 1) -> None:
        self._done += steps
        if self._progress is not None:
            self._progress(self._ingested + self._done, self._ingested + self._later)


def run_suite(
    suite: Suite,
    out_dir: Path,
    work_dir: Path,
    base: Settings | None = None,
    eval_root: Path | None = None,
    progress: Progress | None = None,
) -> SuiteResult:
    """Ingest the suite's corpus, run its queries per mode and persona, judge the result against
    the thresholds and the last run, and append it to the history in ``out_dir``."""
    start = time.perf_counter()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    data = load_beir((eval_root or default_eval_root()) / suite.dataset, suite.split)
    corpus, queries = _subset(data, suite)
    overlay = Overlay(suite.personas.spaces)
    personas = make_personas(suite.personas.spaces, suite.personas.count, suite.personas.seed)
    settings = suite_settings(suite, work_dir, base)
    llm = llm_metrics_configured()
    judged = _judged(queries, data) if llm else []
    steps = _Steps(progress, len(suite.modes) * (len(personas) * len(queries) + len(judged)))
    connector = BeirConnector(f"eval-{suite.dataset}", corpus, overlay)
    summary = ingest(connector, settings, progress=steps.ingest)
    log.info("ingested %s: %s chunks", suite.dataset, summary.chunks)
    store = build_store(settings)
    embedder = with_cache(build_embedder(settings.embedding), settings)
    modes = []
    failures: list[str] = []
    reranker, problem = _suite_reranker(suite, work_dir)
    for mode in suite.modes:
        if reranked(mode) and reranker is None:
            failures.append(f"{mode}: {problem}")
            steps.advance(len(personas) * len(queries) + len(judged))
            continue
        retriever = _retriever(suite, store, embedder, mode, suite.k, reranker)
        try:
            results = [
                _evaluate_persona(retriever, persona, overlay, corpus, queries, data, suite, steps)
                for persona in personas
            ]
        except RagError as exc:
            if not reranked(mode):
                raise
            failures.append(f"{mode} failed (the reranker raises, never falls back): {exc}")
            continue
        modes.append(ModeResult(mode, results))
    result = SuiteResult(suite.name, started_at, 0.0, len(corpus), len(queries), modes)
    result.failures.extend(failures)
    if llm:
        _llm_judged(result, store, embedder, corpus, queries, data, suite, judged, steps, reranker)
    else:
        result.notes.append(LLM_SKIP_MESSAGE)
    _verdict(result, suite, load_history(out_dir, suite.name))
    result.seconds = time.perf_counter() - start
    append_history(
        out_dir,
        suite.name,
        {
            "started_at": started_at,
            "passed": result.passed,
            "leaks": result.leaks,
            "headline": result.headline(),
        },
    )
    return result


def _suite_reranker(suite: Suite, work_dir: Path) -> tuple[Reranker | None, str]:
    """The reranker of the suite's ``+rerank`` modes, loaded (a missing model fails here, not
    per query), or None and why. A bi-encoder keeps its passage vectors beside the embedding
    cache (``<work_dir>/rerank-cache.sqlite``) unless the suite names a file."""
    settings = suite.rerank
    if settings is None or not any(reranked(m) for m in suite.modes):
        return None, "no reranker"
    settings = settings.model_copy(update={"on_error": "raise"})
    folder = None
    if settings.provider == "local":
        folder = settings.local.model_dir
    elif settings.provider == "bi_encoder":
        folder = settings.bi_encoder.model_dir
        if settings.bi_encoder.cache_path is None:
            cache = work_dir / "rerank-cache.sqlite"
            bi = settings.bi_encoder.model_copy(update={"cache_path": cache})
            settings = settings.model_copy(update={"bi_encoder": bi})
    if settings.provider in ("local", "bi_encoder") and (folder is None or not folder.is_dir()):
        return None, (
            f"no reranker model folder {folder} ({settings.provider}): run "
            "scripts/fetch-rerank-model.sh to fetch it (bge-small-en-v1.5 from Maven Central)"
        )
    try:
        reranker = build_reranker(settings)
        if reranker is None:
            return None, "the suite's [rerank] provider is none"
        reranker.rerank("warm-up", ["warm-up"])  # loads the model: fail once, clearly
    except RagError as exc:
        return None, f"the reranker does not load: {exc}"
    return reranker, ""


def _retriever(
    suite: Suite,
    store: Any,
    embedder: Any,
    mode: Mode,
    k: int,
    reranker: Reranker | None,
) -> Retriever:
    if not reranked(mode):
        return Retriever(store, embedder, k, mode=first_stage(mode))
    assert reranker is not None and suite.rerank is not None
    return Retriever(
        store,
        embedder,
        k,
        mode=first_stage(mode),
        reranker=reranker,
        rerank_candidates=suite.rerank.candidates,
        rerank_on_error="raise",
    )


def _judged(queries: dict[str, str], data: BeirDataset) -> list[str]:
    """The judged queries the LLM-judged metrics score: the first ``LLM_SAMPLE``."""
    return [q for q in queries if data.qrels.get(q)][:LLM_SAMPLE]


def _llm_judged(
    result: SuiteResult,
    store: Any,
    embedder: Any,
    corpus: dict[str, tuple[str, str]],
    queries: dict[str, str],
    data: BeirDataset,
    suite: Suite,
    judged: list[str],
    steps: _Steps,
    reranker: Reranker | None = None,
) -> None:
    """ragas' LLM-judged metrics for the persona that may read everything (Bedrock, costs money:
    the ``judged`` sample of queries per mode)."""
    import os

    from evaluation.ragas_metrics import llm_judged_scores

    everyone = next(p for p in make_personas(suite.personas.spaces, 0, 0) if p.name == "all")
    for mode in result.modes:
        retriever = _retriever(suite, store, embedder, mode.mode, 5, reranker)
        samples = []
        for qid in judged:
            hits = retriever.retrieve(queries[qid], everyone.user, 5)
            reference = "\n".join(" ".join(corpus[d]) for d in data.qrels[qid] if d in corpus)
            samples.append((queries[qid], [h.chunk.text for h in hits], reference))
        scores = llm_judged_scores(
            samples,
            os.environ["RAG_EVAL_BEDROCK_MODEL_ID"],
            os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
        )
        mode.persona("all").metrics.update(scores)
        steps.advance(len(judged))


def _evaluate_persona(
    retriever: Retriever,
    persona: Persona,
    overlay: Overlay,
    corpus: dict[str, tuple[str, str]],
    queries: dict[str, str],
    data: BeirDataset,
    suite: Suite,
    steps: _Steps,
) -> PersonaResult:
    run: dict[str, dict[str, float]] = {}
    leaks = 0
    samples: list[tuple[list[str], list[str]]] = []
    visible = {d for d in corpus if persona.may_read(overlay, d)}
    qrels = {q: {d: r for d, r in data.qrels.get(q, {}).items() if d in visible} for q in queries}
    qrels = {q: rel for q, rel in qrels.items() if rel}
    for qid, text in queries.items():
        hits = retriever.retrieve(text, persona.user, suite.k)
        ranking: dict[str, float] = {}
        for rank, hit in enumerate(hits):
            doc = BeirConnector.doc_id_of(hit.chunk.citation.uri)
            if not persona.may_read(overlay, doc):
                leaks += 1
                log.error("LEAK: persona %s got %s", persona.name, doc)
            ranking.setdefault(doc, float(len(hits) - rank))
        run[qid] = ranking
        if qid in qrels:
            top = list(ranking)[:10]
            samples.append((top, sorted(qrels[qid])))
        steps.advance()
    metrics = evaluate_run(qrels, run, MEASURES) if qrels else {}
    if qrels:
        precision, recall = id_based_scores(samples)
        metrics["ragas.id_context_precision@10"] = precision
        metrics["ragas.id_context_recall@10"] = recall
    return PersonaResult(
        persona.name, len(visible) / max(len(corpus), 1), len(qrels), leaks, metrics
    )


def _verdict(result: SuiteResult, suite: Suite, history: list[dict[str, Any]]) -> None:
    if result.leaks:
        result.failures.append(
            f"{result.leaks} leaked chunks: a persona saw documents outside its ACL"
        )
    none = [p for m in result.modes for p in m.personas if p.persona == "none"]
    if any(p.metrics for p in none):
        result.failures.append("the persona that may read nothing was scored on relevant hits")
    headline = result.headline()
    for key, minimum in suite.thresholds.items():
        value = headline.get(key)
        if value is None:
            result.failures.append(f"{key}: no such measure in this run")
        elif value < minimum:
            result.failures.append(f"{key} = {value:.4f} is below the threshold {minimum:.4f}")
    if history:
        previous = history[-1]
        result.previous = previous
        for key, value in headline.items():
            metric = key.split(".", 1)[1]
            tolerance = suite.tolerances.get(metric)
            before = previous.get("headline", {}).get(key)
            if tolerance is not None and before is not None and value < before - tolerance:
                result.failures.append(
                    f"{key} regressed from {before:.4f} to {value:.4f} (tolerance {tolerance})"
                )
