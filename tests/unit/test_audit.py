from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from connectors.filesystem import FilesystemConnector
from rag.audit import JsonlAuditSink, principals_digest
from rag.cli import app
from rag.cli_audit import parse_since
from rag.config import Settings
from rag.errors import AuditError
from rag.identity import UserContext
from rag.pipeline import ingest
from rag.retrieval import Retriever
from tests.sync_contract import make_corpus

ALICE = UserContext.of("Alice", ["eng"])


@pytest.fixture
def indexed(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path / "data", embedding={"provider": "hash"})
    ingest(FilesystemConnector(make_corpus(tmp_path / "src", docs=3), "src"), settings)
    return settings


def test_every_retrieval_writes_one_record(indexed: Settings) -> None:
    retriever = Retriever.from_settings(indexed)
    result = retriever.search("design note subsystem", ALICE, k=4)
    assert result.audit_id is not None and result.hits
    (record,) = JsonlAuditSink(indexed.data_dir / "audit").records()
    assert record.id == result.audit_id
    assert record.user_id == "alice"  # canonical form
    principals = ALICE.principals()
    assert record.principals_count == len(principals)
    assert record.principals_hash == principals_digest(principals)
    assert record.query is None and len(record.query_hash) == 32
    assert (record.mode, record.k) == ("hybrid", 4)
    assert [h.chunk_id for h in record.hits] == [h.chunk.id for h in result.hits]
    assert {h.acl_version for h in record.hits} == {h.chunk.acl.digest() for h in result.hits}
    assert record.latency_ms > 0
    retriever.retrieve("another question", UserContext.of("bob"))
    assert len(list(JsonlAuditSink(indexed.data_dir / "audit").records())) == 2


def test_query_text_only_when_enabled(indexed: Settings) -> None:
    settings = indexed.model_copy(
        update={"audit": indexed.audit.model_copy(update={"include_query_text": True})}
    )
    Retriever.from_settings(settings).retrieve("what about subsystem 2", ALICE)
    (record,) = JsonlAuditSink(indexed.data_dir / "audit").records()
    assert record.query == "what about subsystem 2"


def test_a_failed_audit_write_fails_the_retrieval_unless_configured(indexed: Settings) -> None:
    blocker = indexed.data_dir / "not-a-dir"
    blocker.write_text("a file where the audit folder should be")
    audit = indexed.audit.model_copy(update={"path": blocker})
    closed = indexed.model_copy(update={"audit": audit})
    with pytest.raises(AuditError, match="cannot write"):
        Retriever.from_settings(closed).retrieve("design", ALICE)
    opened = indexed.model_copy(update={"audit": audit.model_copy(update={"fail_closed": False})})
    assert Retriever.from_settings(opened).search("design", ALICE).hits


def test_auditing_can_be_off(indexed: Settings) -> None:
    off = indexed.model_copy(update={"audit": indexed.audit.model_copy(update={"enabled": False})})
    assert Retriever.from_settings(off).search("design", ALICE).audit_id is None
    assert not (indexed.data_dir / "audit").exists()


def test_records_filter_by_user_and_time_and_feedback_round_trips(indexed: Settings) -> None:
    retriever = Retriever.from_settings(indexed)
    first = retriever.search("design", ALICE)
    retriever.search("design", UserContext.of("bob", ["eng"]))
    sink = JsonlAuditSink(indexed.data_dir / "audit")
    assert [r.id for r in sink.records(user_id="alice")] == [first.audit_id]
    assert len(list(sink.records(since=datetime.now(UTC) - timedelta(minutes=5)))) == 2
    assert list(sink.records(since=datetime.now(UTC) + timedelta(minutes=5))) == []
    assert first.audit_id is not None
    retriever.feedback(first.audit_id, helpful=False, note="wrong subsystem")
    (verdict,) = sink.feedback()
    assert (verdict.audit_id, verdict.helpful, verdict.note) == (
        first.audit_id,
        False,
        "wrong subsystem",
    )


def test_langchain_documents_carry_the_audit_id(indexed: Settings) -> None:
    from rag.retrieval.langchain import PermissionAwareRetriever

    docs = PermissionAwareRetriever(core=Retriever.from_settings(indexed), user=ALICE).invoke(
        "design note"
    )
    (record,) = JsonlAuditSink(indexed.data_dir / "audit").records()
    assert docs and {d.metadata["audit_id"] for d in docs} == {record.id}


def test_parse_since() -> None:
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    assert parse_since("1h", now) == now - timedelta(hours=1)
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("2026-11-30T00:00:00", now) == datetime(2026, 11, 30, tzinfo=UTC)


def test_cli_audit_and_feedback(indexed: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_EMBEDDING__PROVIDER", "hash")
    monkeypatch.setenv("RAG_DATA_DIR", str(indexed.data_dir))
    runner = CliRunner()
    queried = runner.invoke(app, ["query", "design", "--user", "ALICE", "-g", "eng", "--json"])
    assert queried.exit_code == 0, queried.output
    audit_id = json.loads(queried.output)["audit_id"]
    listed = runner.invoke(app, ["audit", "--user", "alice", "--since", "1h", "--json"])
    assert listed.exit_code == 0, listed.output
    (line,) = listed.output.splitlines()
    assert json.loads(line)["id"] == audit_id
    assert runner.invoke(app, ["audit", "--user", "bob", "--json"]).output == ""
    voted = runner.invoke(app, ["feedback", audit_id, "--helpful"])
    assert voted.exit_code == 0, voted.output
    (verdict,) = JsonlAuditSink(indexed.data_dir / "audit").feedback()
    assert verdict.helpful
    bad = runner.invoke(app, ["audit", "--since", "yesterday-ish"])
    assert bad.exit_code == 1 and "--since" in bad.output


def test_helpful_rate_per_source_and_mode_reaches_the_report(indexed: Settings) -> None:
    from evaluation.feedback import helpful_rates
    from evaluation.report import render_html, render_markdown
    from evaluation.runner import SuiteResult

    retriever = Retriever.from_settings(indexed)
    ids = [retriever.search("design note", ALICE).audit_id for _ in range(3)]
    nothing = retriever.search("design note", UserContext.of("nobody")).audit_id
    for audit_id, helpful in zip([*ids, nothing], [True, True, False, False], strict=True):
        assert audit_id is not None
        retriever.feedback(audit_id, helpful)
    retriever.feedback(ids[2], True)  # a user changed their mind: the latest vote wins
    rates = {
        (r.source, r.mode): r for r in helpful_rates(JsonlAuditSink(indexed.data_dir / "audit"))
    }
    assert (rates[("src", "hybrid")].votes, rates[("src", "hybrid")].helpful) == (3, 3)
    assert rates[("(no hits)", "hybrid")].rate == 0.0
    result = SuiteResult("s", "now", 1.0, 1, 1, [], feedback=[r.to_json() for r in rates.values()])
    page = render_html(result, [])
    assert "User feedback" in page and "100.0%" in page
    assert "| src | hybrid | 3 | 100.0% |" in render_markdown(result)
