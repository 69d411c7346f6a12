"""CI's evaluation suite: SciFact (judged docs plus distractors) through the real pipeline and the
offline model, eight personas; fails on any leak or threshold miss."""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluation.report import write_report
from evaluation.runner import run_suite
from evaluation.suite import load_suite
from rag.config import Settings


@pytest.mark.slow
@pytest.mark.timeout(1200)  # 2-3 min idle, up to ~10 min on a loaded 2-core machine: x2 headroom
def test_scifact_small_suite(tmp_path: Path) -> None:
    suite = load_suite("scifact-small")
    result = run_suite(
        suite, tmp_path / "reports", tmp_path / "work", Settings(data_dir=tmp_path / "d")
    )
    write_report(result, tmp_path / "reports")
    assert result.leaks == 0
    assert result.passed, result.failures
    dense = result.modes[0]
    all_ndcg = dense.persona("all").metrics["nDCG@10"]
    # a persona that may read every relevant document loses nothing but distractors
    assert all_ndcg >= 0.60
    assert dense.persona("none").metrics == {}
