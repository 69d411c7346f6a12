"""Reciprocal rank fusion of ranked lists (Cormack, Clarke & Büttcher, SIGIR 2009)."""

from __future__ import annotations

from collections.abc import Sequence

from rag.models import SearchHit


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[SearchHit]], k: int, rrf_k: int = 60
) -> list[SearchHit]:
    """Fuse rankings by sum of 1/(rrf_k + rank); the hit's score becomes its fused score."""
    scores: dict[str, float] = {}
    hits: dict[str, SearchHit] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.chunk.id] = scores.get(hit.chunk.id, 0.0) + 1.0 / (rrf_k + rank)
            hits.setdefault(hit.chunk.id, hit)
    order = sorted(scores, key=lambda cid: (-scores[cid], cid))[:k]
    return [hits[cid].model_copy(update={"score": scores[cid]}) for cid in order]
