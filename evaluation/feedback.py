"""Users' thumbs-up/down on audited retrievals, as a helpful rate per source and mode, for the
nightly report next to the offline metrics."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from rag.audit import AuditSink


@dataclass(frozen=True)
class HelpfulRate:
    source: str
    mode: str
    votes: int
    helpful: int

    @property
    def rate(self) -> float:
        return self.helpful / self.votes if self.votes else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "rate": round(self.rate, 4)}


def helpful_rates(sink: AuditSink, since: datetime | None = None) -> list[HelpfulRate]:
    """One row per (source, mode): a vote counts for every source among the retrieval's hits
    (``(no hits)`` when it returned nothing). The latest vote on a retrieval wins."""
    votes = {f.audit_id: f.helpful for f in sink.feedback(since=since)}
    if not votes:
        return []
    total: Counter[tuple[str, str]] = Counter()
    good: Counter[tuple[str, str]] = Counter()
    for record in sink.records(since=since):
        if record.id not in votes:
            continue
        for source in sorted({h.source for h in record.hits}) or ["(no hits)"]:
            total[(source, record.mode)] += 1
            good[(source, record.mode)] += votes[record.id]
    return [HelpfulRate(s, m, total[(s, m)], good[(s, m)]) for s, m in sorted(total)]
