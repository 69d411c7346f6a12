"""Embedding usage and cost: every provider call's texts, tokens and latency, per source, tenant
and model, priced from the per-model table in the settings."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rag.embeddings.base import Embedder, InputKind, Vectors
from rag.tokens import get_encoding


@dataclass
class Usage:
    calls: int = 0
    texts: int = 0
    tokens: int = 0
    seconds: float = 0.0

    def cost(self, model_id: str, prices: Mapping[str, float]) -> float | None:
        price = price_for(model_id, prices)
        return None if price is None else self.tokens / 1000 * price


def price_for(model_id: str, prices: Mapping[str, float]) -> float | None:
    """The price per 1,000 tokens of ``model_id``: the longest matching prefix in the table."""
    matches = [key for key in prices if model_id.startswith(key)]
    return prices[max(matches, key=len)] if matches else None


class UsageLedger:
    """Thread-safe totals keyed by (source, tenant, model id)."""

    def __init__(self) -> None:
        self._totals: dict[tuple[str, str, str], Usage] = {}
        self._lock = threading.Lock()

    def record(
        self,
        source: str,
        tenant: str,
        model_id: str,
        texts: int,
        tokens: int,
        seconds: float,
        calls: int = 1,
    ) -> None:
        with self._lock:
            usage = self._totals.setdefault((source, tenant, model_id), Usage())
            usage.calls += calls
            usage.texts += texts
            usage.tokens += tokens
            usage.seconds += seconds

    def totals(self) -> dict[tuple[str, str, str], Usage]:
        with self._lock:
            return {k: Usage(**v.__dict__) for k, v in self._totals.items()}

    def report(self, prices: Mapping[str, float]) -> list[dict[str, object]]:
        return [
            {
                "source": s,
                "tenant": t,
                "model_id": m,
                "calls": u.calls,
                "texts": u.texts,
                "tokens": u.tokens,
                "seconds": round(u.seconds, 4),
                "cost_usd": u.cost(m, prices),
            }
            for (s, t, m), u in sorted(self.totals().items())
        ]


class MeteredEmbedder:
    """Counts what reaches the provider. Tokens are those the provider reports (Bedrock Titan,
    Cohere) or else counted with tiktoken."""

    def __init__(
        self,
        inner: Embedder,
        ledger: UsageLedger,
        source: str,
        tenant: str = "-",
        encoding: str = "cl100k_base",
    ) -> None:
        self._inner = inner
        self._ledger = ledger
        self._source = source
        self._tenant = tenant
        self._encoding = encoding

    @property
    def model_id(self) -> str:
        return self._inner.model_id

    @property
    def dimension(self) -> int:
        return self._inner.dimension

    def embed_batch(self, texts: Sequence[str], *, kind: InputKind = "document") -> Vectors:
        reported_before = getattr(self._inner, "tokens_reported", None)
        start = time.perf_counter()
        vectors = self._inner.embed_batch(texts, kind=kind)
        seconds = time.perf_counter() - start
        reported_after = getattr(self._inner, "tokens_reported", None)
        if (
            reported_before is not None
            and reported_after is not None
            and reported_after > reported_before
        ):
            tokens = int(reported_after - reported_before)
        else:
            encoding = get_encoding(self._encoding)
            tokens = sum(len(encoding.encode(t, disallowed_special=())) for t in texts)
        calls = estimated_calls(
            self._inner, len(texts), max(len(texts), 1)
        )  # API calls, no retries
        self._ledger.record(
            self._source, self._tenant, self.model_id, len(texts), tokens, seconds, calls
        )
        return vectors


def estimated_calls(embedder: Embedder, texts: int, batch_size: int) -> int:
    """How many provider calls embedding ``texts`` texts takes."""
    model = embedder.model_id
    if model.startswith("bedrock/amazon.titan"):
        return texts
    if model.startswith("bedrock/cohere"):
        return -(-texts // 96)
    return -(-texts // batch_size) if texts else 0
