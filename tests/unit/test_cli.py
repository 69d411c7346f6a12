from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rag.cli import app
from rag.demo import corpus_path

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RAG_EMBEDDING__PROVIDER", "hash")
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    return Path(shutil.copytree(corpus_path(), tmp_path / "corpus"))


def test_ingest_then_query_json(env: Path) -> None:
    result = runner.invoke(app, ["ingest", str(env), "--name", "kestrel", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["documents_ingested"] == 10 and len(summary["quarantined"]) == 2

    result = runner.invoke(
        app,
        [
            "query",
            "salary bands engineering",
            "--user",
            "alice",
            "--group",
            "hr",
            "--json",
            "-k",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["user"] == "alice" and payload["groups"] == ["hr"]
    assert 0 < len(payload["hits"]) <= 3
    for hit in payload["hits"]:
        assert set(hit) >= {"chunk_id", "document_id", "score", "text"}
    assert any("Salary bands" in h["text"] for h in payload["hits"])

    guest = runner.invoke(app, ["query", "salary bands engineering", "--user", "guest", "--json"])
    assert all("Salary" not in h["text"] for h in json.loads(guest.stdout)["hits"])


def test_query_treats_a_hostile_user_id_as_a_literal(env: Path) -> None:
    runner.invoke(app, ["ingest", str(env)])
    result = runner.invoke(app, ["query", "salary", "--user", "x' OR 1=1", "--json"])
    assert result.exit_code == 0, result.output
    nobody = runner.invoke(app, ["query", "salary", "--user", "nobody", "--json"])
    hits = json.loads(result.output)["hits"]
    assert hits == json.loads(nobody.output)["hits"]  # what every user sees: public documents
    assert all("salary" not in h["citation"]["uri"] for h in hits)


@pytest.mark.parametrize("bad", ["a\x00b", "zero\u200bwidth", "x" * 10_000, "   "])
def test_query_refuses_an_invalid_user_briefly(env: Path, bad: str) -> None:
    runner.invoke(app, ["ingest", str(env)])
    result = runner.invoke(app, ["query", "x", "--user", bad])
    assert result.exit_code == 1
    assert "invalid user id" in result.output
    assert len(result.output) < 500  # the value is truncated, never echoed whole


def test_query_requires_user() -> None:
    assert runner.invoke(app, ["query", "x"]).exit_code != 0


def test_demo_runs_on_the_real_model(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--data-dir", str(tmp_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "hr/salary-bands.md" in out and "quarantined" in out
    salary_block = out.split("Q: How much does a senior software engineer earn?")[1].split("Q:")[0]
    lines = {line.split()[0]: line for line in salary_block.strip().splitlines()}
    assert "hr/salary-bands.md" in lines["alice"]
    assert "hr/salary-bands.md" not in lines["mallory"]
    assert "nothing relevant" in lines["guest"]
