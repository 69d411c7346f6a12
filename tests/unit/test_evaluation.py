from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from evaluation.personas import Overlay, make_personas
from evaluation.ragas_metrics import id_based_scores
from evaluation.report import write_report
from evaluation.runner import run_suite
from evaluation.suite import Suite, load_suite
from rag.config import Settings


def tiny_beir(root: Path) -> Path:
    """A small BEIR dataset: 40 docs about distinct topics, 12 queries with one answer each."""
    data = root / "tiny"
    (data / "qrels").mkdir(parents=True)
    topics = [
        "volcano",
        "glacier",
        "enzyme",
        "satellite",
        "violin",
        "orchard",
        "tornado",
        "protein",
        "galaxy",
        "harbor",
        "lantern",
        "meadow",
    ]
    docs = []
    for i in range(40):
        topic = topics[i % len(topics)]
        docs.append(
            {
                "_id": f"d{i}",
                "title": f"On the {topic} number {i}",
                "text": f"The {topic} {i} is described here in detail with facts about {topic}.",
            }
        )
    (data / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs))
    queries = [
        {"_id": f"q{j}", "text": f"facts about the {t} number {j}"} for j, t in enumerate(topics)
    ]
    (data / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries))
    (data / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{j}\td{j}\t1\n" for j in range(12))
    )
    return root


def suite(**overrides: object) -> Suite:
    values: dict[str, object] = {
        "name": "tiny",
        "dataset": "tiny",
        "embedder": "hash",
        "modes": ["dense"],
        "k": 20,
        "personas": {"spaces": 4, "count": 3, "seed": 1},
        "thresholds": {"dense.nDCG@10": 0.3},
    }
    values.update(overrides)
    return Suite.model_validate(values)


def test_shipped_suites_are_valid() -> None:
    for name in ("scifact-small", "scifact-nightly", "scifact-embedded"):
        assert load_suite(name).name == name


def test_overlay_and_personas_are_deterministic() -> None:
    overlay = Overlay(8)
    assert overlay.space_of("doc-1") == Overlay(8).space_of("doc-1")
    personas = make_personas(8, 5, seed=3)
    assert [p.name for p in personas][:2] == ["all", "none"]
    assert personas[0].spaces == frozenset(range(8)) and not personas[1].spaces
    assert make_personas(8, 5, seed=3) == personas


@pytest.mark.slow  # loads a model or ragas (make test runs it; test-fast stays under 90 s)
def test_ragas_guard_scores_an_empty_context_zero() -> None:
    assert id_based_scores([([], ["d1"])]) == (0.0, 0.0)
    precision, recall = id_based_scores([(["d1", "d2"], ["d1"])])
    assert (precision, recall) == (pytest.approx(0.5), pytest.approx(1.0))


@pytest.mark.slow  # runs in make test, not make test-fast
def test_suite_run_report_and_regression(tmp_path: Path) -> None:
    root = tiny_beir(tmp_path / "eval")
    out = tmp_path / "reports"
    result = run_suite(suite(), out, tmp_path / "work", Settings(data_dir=tmp_path / "d"), root)
    assert result.leaks == 0
    assert result.passed, result.failures
    dense = result.modes[0]
    assert dense.persona("all").metrics["nDCG@10"] > 0.3
    assert dense.persona("none").metrics == {}  # it may read nothing: no quality to score
    assert 0 < dense.persona("p0").selectivity < 1
    html = write_report(result, out)
    assert "PASS" in html.read_text() and "<img" in html.read_text()
    assert json.loads((out / "tiny" / "report.json").read_text())["leaks"] == 0

    # an impossible threshold, a measure this run lacks, and a tolerance no run can meet
    worse = suite(
        thresholds={"dense.nDCG@10": 1.5, "bm25.nDCG@10": 0.1}, tolerances={"nDCG@10": -1.0}
    )
    failed = run_suite(worse, out, tmp_path / "work2", Settings(data_dir=tmp_path / "d"), root)
    assert not failed.passed
    assert any("below the threshold" in f for f in failed.failures)
    assert any("regressed" in f for f in failed.failures)
    assert any("no such measure" in f for f in failed.failures)
    assert failed.previous is not None


def test_a_leak_fails_the_suite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Index under one ACL overlay, judge by another: every mismatch counts as a leak."""
    import evaluation.runner as runner
    from evaluation.beir_connector import BeirConnector

    class MislabelledConnector(BeirConnector):
        def __init__(self, name: str, corpus: dict[str, tuple[str, str]], _: Overlay) -> None:
            super().__init__(name, corpus, Overlay(5))  # the suite judges with 4 spaces

    monkeypatch.setattr(runner, "BeirConnector", MislabelledConnector)
    root = tiny_beir(tmp_path / "eval")
    result = run_suite(
        suite(), tmp_path / "out", tmp_path / "w", Settings(data_dir=tmp_path / "d"), root
    )
    assert result.leaks > 0
    assert not result.passed
    assert any("leaked" in f for f in result.failures)


@pytest.mark.slow  # runs in make test, not make test-fast
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    root = tiny_beir(tmp_path / "eval")
    out = tmp_path / "reports"
    result = run_suite(suite(), out, tmp_path / "work", Settings(data_dir=tmp_path / "d"), root)
    html = write_report(result, out)
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=3000",
    ]
    dom = subprocess.run(
        ["chromium", *flags, "--dump-dom", html.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert 'data-rendered="ok"' in dom  # every plot decoded and drawn
    assert 'data-tables="2"' in dom  # the summary table and the one mode's persona table
    shot = tmp_path / "report.png"
    subprocess.run(
        ["chromium", *flags, f"--screenshot={shot}", "--window-size=1200,2000", html.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.stat().st_size > 20_000
