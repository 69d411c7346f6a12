from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluation.datasets import load_beir
from evaluation.metrics import evaluate_run
from rag.models import SearchHit
from rag.stores.fusion import reciprocal_rank_fusion
from tests.contract import make_chunk


def hits(*names: str) -> list[SearchHit]:
    return [SearchHit(chunk=make_chunk(n, 0, n, {"public"}), score=1.0) for n in names]


def test_rrf_rewards_agreement() -> None:
    fused = reciprocal_rank_fusion([hits("a", "b", "c"), hits("b", "c", "d")], k=3, rrf_k=60)
    assert [h.chunk.document_id for h in fused] == ["b", "c", "a"]
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61)


def test_rrf_is_deterministic_on_ties() -> None:
    fused = reciprocal_rank_fusion([hits("x"), hits("y")], k=2)
    assert [h.chunk.document_id for h in fused] == sorted(
        ["x", "y"], key=lambda d: make_chunk(d, 0, d, {"public"}).id
    )


def test_beir_loader_and_ndcg(tmp_path: Path) -> None:
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text(
        "\n".join(json.dumps({"_id": d, "title": d.upper(), "text": f"text {d}"}) for d in "abc")
    )
    (tmp_path / "queries.jsonl").write_text(
        json.dumps({"_id": "1", "text": "q1"}) + "\n" + json.dumps({"_id": "2", "text": "unjudged"})
    )
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\tb\t1\n")
    ds = load_beir(tmp_path)
    assert ds.corpus["a"] == ("A", "text a")
    assert ds.queries == {"1": "q1"}
    assert evaluate_run(ds.qrels, {"1": {"b": 2.0, "a": 1.0}})["nDCG@10"] == pytest.approx(1.0)
    assert evaluate_run(ds.qrels, {"1": {"a": 2.0, "b": 1.0}})["nDCG@10"] == pytest.approx(
        0.6309, abs=1e-4
    )


def test_scifact_is_where_the_docs_say() -> None:
    from evaluation.datasets import default_eval_root

    ds = load_beir(default_eval_root() / "scifact")
    assert len(ds.corpus) == 5183
    assert len(ds.queries) == 300
    assert sum(len(v) for v in ds.qrels.values()) == 339
