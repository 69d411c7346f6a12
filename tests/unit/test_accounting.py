from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from connectors.filesystem import FilesystemConnector
from rag.accounting import MeteredEmbedder, UsageLedger, estimated_calls, price_for
from rag.config import Settings
from rag.demo import corpus_path
from rag.embeddings.base import InputKind, Vectors
from rag.embeddings.hashing import HashEmbedder
from rag.estimate import estimate
from rag.pipeline import ingest


class FakeTitan(HashEmbedder):
    """A hash embedder that bills like Titan v2 (one call per text, tokens reported)."""

    def __init__(self) -> None:
        super().__init__(64)
        self.tokens_reported = 0

    @property
    def model_id(self) -> str:
        return "bedrock/amazon.titan-embed-text-v2:0@1024"

    def embed_batch(self, texts: Sequence[str], *, kind: InputKind = "document") -> Vectors:
        self.tokens_reported += sum(len(t.split()) for t in texts)
        return super().embed_batch(texts, kind=kind)


def test_price_lookup_uses_longest_prefix() -> None:
    prices = {"bedrock/": 1.0, "bedrock/amazon.titan-embed-text-v2:0": 0.02}
    assert price_for("bedrock/amazon.titan-embed-text-v2:0@512", prices) == 0.02
    assert price_for("bedrock/cohere.embed-english-v3", prices) == 1.0
    assert price_for("tei/x", prices) is None


def test_metering_prefers_reported_tokens() -> None:
    ledger = UsageLedger()
    MeteredEmbedder(FakeTitan(), ledger, "hr", "acme").embed_batch(["one two three", "four"])
    MeteredEmbedder(HashEmbedder(8), ledger, "hr", "acme").embed_batch(["hello world"])
    totals = ledger.totals()
    assert totals["hr", "acme", "bedrock/amazon.titan-embed-text-v2:0@1024"].tokens == 4
    assert totals["hr", "acme", "hash-embedder-v1-8"].tokens == 2  # counted with tiktoken


def test_estimated_calls_follow_the_provider() -> None:
    assert estimated_calls(FakeTitan(), 10, 32) == 10
    assert estimated_calls(HashEmbedder(8), 65, 32) == 3


@pytest.mark.slow  # runs in make test, not make test-fast
def test_dry_run_then_ingest_then_dry_run(settings: Settings, tmp_path: Path) -> None:
    corpus = Path(shutil.copytree(corpus_path(), tmp_path / "c"))
    settings = settings.model_copy(update={"tenant": "kestrel-inc"})
    before = estimate(FilesystemConnector(corpus, "kestrel"), settings, embedder=FakeTitan())
    assert before.documents_to_process == 12
    assert before.texts_to_embed == before.chunks > 0
    assert before.embedding_calls == before.texts_to_embed  # Titan: one text per call
    assert before.cost_usd == pytest.approx(before.tokens_to_embed / 1000 * 0.00002)
    assert len(before.unparseable) == 1  # the corrupt PDF would be quarantined
    assert not (settings.data_dir / "lancedb").exists()  # nothing was written

    summary = ingest(FilesystemConnector(corpus, "kestrel"), settings, embedder=FakeTitan())
    assert summary.embedding_calls == summary.embedded_texts
    assert summary.usage[0]["tenant"] == "kestrel-inc"
    assert summary.usage[0]["source"] == "kestrel"
    assert summary.estimated_cost_usd is not None and summary.estimated_cost_usd > 0

    after = estimate(FilesystemConnector(corpus, "kestrel"), settings, embedder=FakeTitan())
    # quarantined files are not retried until they change
    assert (after.documents_to_process, after.texts_to_embed, after.embedding_calls) == (0, 0, 0)
