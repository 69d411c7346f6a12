from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rag.cli import app, ingest_problems
from rag.demo import corpus_path
from rag.pipeline import IngestSummary
from rag.progress import ProgressReporter
from rag.retrieval.core import Retrieval

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RAG_EMBEDDING__PROVIDER", "hash")
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    return Path(shutil.copytree(corpus_path(), tmp_path / "corpus"))


@pytest.mark.slow  # loads the ONNX model: runs in make test
def test_ingest_then_query_json(env: Path) -> None:
    result = runner.invoke(app, ["ingest", str(env), "--name", "kestrel", "--json"])
    assert result.exit_code == 3, result.output  # completed; two demo files are quarantined
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


@pytest.mark.slow  # loads a model or ragas (make test runs it; test-fast stays under 90 s)
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


@pytest.mark.slow  # loads the ONNX model: runs in make test
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


# -- exit codes, one-line errors, sources and quarantine -------------------------------------


def _small_corpus(root: Path) -> Path:
    """Two readable files under policies, one without any policy, one empty (cheap to parse)."""
    (root / "hr").mkdir(parents=True)
    (root / "pub").mkdir()
    (root / "hr" / ".rag-acl.toml").write_text('allow = ["group:hr"]\n')
    (root / "pub" / ".rag-acl.toml").write_text("public = true\n")
    (root / "hr" / "vacation.md").write_text("# Vacation\n\nEmployees get 25 vacation days.\n")
    (root / "pub" / "office.txt").write_text("The office opens at nine.\n")
    return root


@pytest.fixture
def small(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RAG_EMBEDDING__PROVIDER", "hash")
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    return _small_corpus(tmp_path / "corpus")


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_quarantine_exits_3_on_every_run_and_sources_can_be_deleted(small: Path) -> None:
    (small / "orphan.txt").write_text("no policy governs this file\n")
    first = runner.invoke(app, ["ingest", str(small), "--name", "s", "--json"])
    assert first.exit_code == 3, first.output
    assert len(json.loads(first.stdout)["quarantined"]) == 1  # --json keeps its shape
    assert "1 files quarantined (rag quarantine list says why)" in first.stderr

    second = runner.invoke(app, ["ingest", str(small), "--name", "s", "--json"])
    assert second.exit_code == 3, second.output
    assert json.loads(second.stdout)["quarantined"] == []  # the run itself saw nothing new
    assert "1 files quarantined, 1 of them from earlier runs" in second.stderr

    listed = runner.invoke(app, ["quarantine", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in _lines(listed.stdout)]
    assert [(r["uri"], r["reason"], r["recorded"]) for r in rows] == [
        ("orphan.txt", "missing_acl", True)
    ]
    table = runner.invoke(app, ["quarantine", "list"], env={"COLUMNS": "200"})
    assert "orphan.txt" in table.stdout and "1 quarantined" in table.stdout

    sources = runner.invoke(app, ["sources", "list", "--json"])
    assert sources.exit_code == 0, sources.output
    (info,) = [json.loads(line) for line in _lines(sources.stdout)]
    assert info["source"] == "s" and info["chunks"] == 2
    assert info["documents"] == {"live": 2, "pending": 0, "quarantined": 1, "tombstoned": 0}
    assert info["last_run_status"] == "succeeded" and info["acl_watermark"] is not None

    kept = runner.invoke(app, ["sources", "delete", "s"], input="n\n")
    assert kept.exit_code == 1 and "Delete source 's': 3 documents and 2 chunks" in kept.output
    assert _lines(runner.invoke(app, ["sources", "list", "--json"]).stdout)

    gone = runner.invoke(app, ["sources", "delete", "s", "--yes"])
    assert gone.exit_code == 0, gone.output
    assert "deleted source s: 3 documents" in gone.stdout
    query = ["query", "vacation", "--user", "alice", "--group", "hr", "--json"]
    assert json.loads(runner.invoke(app, query).stdout)["hits"] == []
    assert runner.invoke(app, ["quarantine", "list", "--json"]).stdout.strip() == ""
    assert runner.invoke(app, ["sources", "list", "--json"]).stdout.strip() == ""
    again = runner.invoke(app, ["sources", "delete", "s", "--yes"])
    assert again.exit_code == 1 and "no source 's'" in again.output


def test_mass_deletion_held_back_exits_3_naming_the_override(small: Path) -> None:
    assert runner.invoke(app, ["ingest", str(small), "--name", "s"]).exit_code == 0
    for path in (small / "hr" / "vacation.md", small / "pub" / "office.txt"):
        path.unlink()
    held = runner.invoke(app, ["ingest", str(small), "--name", "s"])
    assert held.exit_code == 3, held.output
    assert "deletions held back" in held.stderr
    assert "RAG_SYNC__ALLOW_MASS_DELETE=true" in held.stderr


def test_a_broken_policy_exits_3_naming_file_line_key_and_reason(small: Path) -> None:
    (small / "hr" / ".rag-acl.toml").write_text('allow = ["group:hr"]\nalow = ["user:bob"]\n')
    result = runner.invoke(app, ["ingest", str(small), "--name", "s"], env={"COLUMNS": "300"})
    assert result.exit_code == 3, result.output
    error = next(line for line in result.stdout.splitlines() if "policy error" in line)
    assert "hr/.rag-acl.toml" in error and "line 2" in error and "alow" in error
    assert "Extra inputs are not permitted" in error  # the reason
    assert "1 policy problems" in result.stderr


@pytest.mark.parametrize(
    ("summary", "needle"),
    [
        (
            IngestSummary("s", listing_complete=False, listing_errors=["b/: denied"]),
            "the listing was incomplete (1 errors)",
        ),
        (
            IngestSummary("s", deletion_blocked="listing of s is incomplete"),
            "RAG_SYNC__ALLOW_MASS_DELETE=true overrides",
        ),
        (IngestSummary("s", policy_errors=["p.toml: line 1: bad"]), "1 policy problems"),
    ],
)
def test_each_problem_of_a_completed_run_exits_3(
    small: Path, monkeypatch: pytest.MonkeyPatch, summary: IngestSummary, needle: str
) -> None:
    monkeypatch.setattr("rag.cli.ingest", lambda *args, **kwargs: summary)
    result = runner.invoke(app, ["ingest", str(small), "--json"])
    assert result.exit_code == 3, result.output
    assert needle in result.stderr
    assert json.loads(result.stdout)["source"] == "s"


def test_ingest_problems_is_empty_for_a_clean_run() -> None:
    assert ingest_problems(IngestSummary("s", documents_listed=3)) == []


@pytest.mark.parametrize(
    ("name", "value", "expected", "command"),
    [
        (
            "RAG_EMBEDDING__PROVIDER",
            "bert",
            "RAG_EMBEDDING__PROVIDER='bert' is not allowed: "
            "use one of minilm, hash, bedrock, sagemaker, tei",
            ["query", "x", "--user", "a"],
        ),
        (
            "RAG_AUDIT__ENABLED",
            "maybe",
            "RAG_AUDIT__ENABLED='maybe' is not allowed: use true or false",
            ["runs"],
        ),
        (
            "RAG_CHUNKING__MAX_TOKEN",
            "5",
            "RAG_CHUNKING__MAX_TOKEN is not a setting (RAG_CHUNKING__* are: ENCODING, "
            "MAX_TOKENS, OVERLAP_TOKENS)",
            ["ingest", "."],
        ),
        (
            "RAG_AUTH__AUDIENCE",
            "api://rag",
            "RAG_AUTH__AUDIENCE is not valid JSON",
            ["sources", "list"],
        ),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str, command: list[str]
) -> None:
    monkeypatch.setenv(name, value)
    result = runner.invoke(app, command, env={"COLUMNS": "300"})
    assert result.exit_code == 1, result.output
    (line,) = _lines(result.output)
    assert line.startswith(f"error: {expected}")


def test_opensearch_down_is_one_line_with_the_host(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    for name in ("urllib3", "opensearch"):
        caplog.set_level(logging.WARNING, logger=name)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    host = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("RAG_STORE__BACKEND", "opensearch")
    monkeypatch.setenv("RAG_STORE__OPENSEARCH__HOSTS", json.dumps([host]))
    monkeypatch.setenv("RAG_STORE__OPENSEARCH__MAX_RETRIES", "0")
    monkeypatch.setenv("RAG_EMBEDDING__PROVIDER", "hash")
    result = runner.invoke(app, ["query", "x", "--user", "a"], env={"COLUMNS": "300"})
    assert result.exit_code == 1, result.output
    assert _lines(result.output) == [
        f"error: cannot reach OpenSearch at {host} (connection refused): is it running? Set "
        "RAG_STORE__OPENSEARCH__HOSTS to where it listens (docker compose up -d opensearch "
        "starts the bundled one)"
    ]
    assert not [r for r in caplog.records if r.name.startswith(("urllib3", "opensearch"))]


def test_a_bad_filter_is_one_line(small: Path) -> None:
    for args, message in [
        (["--where", "no-equals-sign"], "error: --where takes key=value, not 'no-equals-sign'"),
        (["--filter", "allow = 'x'"], "error: cannot filter on 'allow'"),
    ]:
        result = runner.invoke(app, ["query", "x", "--user", "a", *args])
        assert result.exit_code == 1
        (line,) = _lines(result.output)
        assert line.startswith(message)


class _Recorder:
    """A retriever that records what the CLI asks of it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int | None, dict[str, object]]] = []

    def search(self, text: str, user: object, k: int | None, **options: object) -> Retrieval:
        self.calls.append((text, k, options))
        return Retrieval([], "audit-1")


def test_query_options_reach_the_retriever(small: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rag.filters import And, Eq, Prefix

    recorder = _Recorder()
    monkeypatch.setattr("rag.cli.Retriever.from_settings", lambda settings: recorder)
    base = ["query", "q", "--user", "alice", "--json"]

    def options(*more: str) -> tuple[int | None, dict[str, object]]:
        result = runner.invoke(app, [*base, *more])
        assert result.exit_code == 0, result.output
        payload = json.loads(result.stdout)
        assert payload == {
            "query": "q",
            "user": "alice",
            "groups": [],
            "audit_id": "audit-1",
            "hits": [],
        }
        _, k, given = recorder.calls.pop()
        return k, given

    assert options() == (None, {"filter": None})  # the settings' defaults apply
    assert options("--k", "3") == options("-k", "3") == (3, {"filter": None})
    assert options("--mode", "hybrid", "--min-score", "0.2")[1] == {
        "mode": "hybrid",
        "min_score": 0.2,
        "filter": None,
    }
    both = options("--filter", 'path startswith "hr/"', "--where", "a=1", "--where", "b=x=y")[1]
    assert both["filter"] == And([Prefix("path", "hr/"), And([Eq("a", "1"), Eq("b", "x=y")])])
    bad = runner.invoke(app, [*base, "--mode", "sparse"])
    assert bad.exit_code == 2  # usage: not one of dense, bm25, hybrid


def test_sources_on_an_empty_data_dir_create_nothing(small: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["sources", "list"])
    assert result.exit_code == 0 and "No sources" in result.stdout
    assert not (tmp_path / "data").exists()


# -- progress --------------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_logs_a_line_every_interval_with_rate_and_eta(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _Clock()
    caplog.set_level(logging.INFO, logger="rag.progress")
    reporter = ProgressReporter(
        "ingest s", interactive=False, interval=5, clock=clock, heartbeat=False
    )
    with reporter as progress:
        clock.now += 2
        assert not progress.emit_due()
        assert progress.line() == "ingest s: running, 2s elapsed"
        progress(0, 100)  # processing starts
        clock.now += 4
        progress(20, 100)  # 6 s after the start: a line
        clock.now += 1
        progress(25, 100)  # within the interval: none
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "ingest s: 20/100 documents (20%), 5.0/s, ETA 16s, 6s elapsed",
        "ingest s: finished 25/100 documents in 7s",
    ]


def test_progress_with_an_unknown_total(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    reporter = ProgressReporter("sync", interactive=False, interval=5, clock=clock, heartbeat=False)
    with reporter as progress:
        progress(0, None)
        clock.now += 10
        progress(30, None)
        assert progress.line() == "sync: 30 documents, 3.0/s, ETA unknown, 10s elapsed"
        assert progress.eta() is None


def test_a_short_command_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rag.progress")
    with ProgressReporter("quick", interactive=False, interval=60) as progress:
        progress(1, 1)
    assert caplog.records == []


def test_progress_draws_a_bar_on_a_terminal() -> None:
    import io

    from rich.console import Console

    out = io.StringIO()
    terminal = Console(file=out, force_terminal=True, width=100)
    with ProgressReporter("ingest s", console=terminal) as progress:
        assert progress.interactive
        progress(3, 4)
    assert "ingest s" in out.getvalue() and "3/4" in out.getvalue()


def test_the_heartbeat_logs_while_nothing_reports(caplog: pytest.LogCaptureFixture) -> None:
    import time

    caplog.set_level(logging.INFO, logger="rag.progress")
    with ProgressReporter("eval x", interactive=False, interval=0.05):
        deadline = time.monotonic() + 2
        while not caplog.records and time.monotonic() < deadline:
            time.sleep(0.01)
    assert caplog.records and caplog.records[0].getMessage().startswith("eval x: running, ")
