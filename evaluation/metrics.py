"""IR metrics through ``ir_measures`` (trec_eval's implementations)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Run = Mapping[str, Mapping[str, float]]  # query id -> doc id -> score
Qrels = Mapping[str, Mapping[str, int]]


def evaluate_run(
    qrels: Qrels, run: Run, measures: tuple[str, ...] = ("nDCG@10",)
) -> dict[str, float]:
    """Mean of each measure over the queries in ``qrels`` (a query with no hits scores 0)."""
    import ir_measures

    parsed: list[Any] = [ir_measures.parse_measure(m) for m in measures]
    full_run = {q: dict(run.get(q, {})) for q in qrels}
    results = ir_measures.calc_aggregate(parsed, {q: dict(d) for q, d in qrels.items()}, full_run)
    return {str(m): float(results[m]) for m in parsed}
