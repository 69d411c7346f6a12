"""A sync run as a stored record (issue 12): steps read and write it, XCom carries ids only."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from connectors.filesystem import FilesystemConnector
from rag import cli
from rag.cli import app
from rag.config import Settings
from rag.embeddings.hashing import HashEmbedder
from rag.models import SourceDocument
from rag.orchestration import list_changes
from rag.pipeline import Ingestor, ingest
from rag.runs import finish_run, run_batch, start_run
from rag.sources import SourceSpec
from rag.stores import build_store
from tests.sync_contract import make_corpus


def test_every_ingest_is_a_recorded_run(settings: Settings, tmp_path: Path) -> None:
    small = settings.model_copy(update={"sync": settings.sync.model_copy(update={"batch_size": 5})})
    summary = ingest(FilesystemConnector(make_corpus(tmp_path / "src", docs=12), "src"), small)
    assert summary.run_id is not None
    log = build_store(small).run_log()
    record = log.get_run(summary.run_id)
    assert (record.status, record.batch_count, len(record.plan["new"])) == ("succeeded", 3, 12)
    assert [b.status for b in log.batches(summary.run_id)] == ["done"] * 3
    assert record.summary["documents_ingested"] == 12 == summary.documents_ingested
    again = ingest(FilesystemConnector(tmp_path / "src", "src"), small)
    assert [r.run_id for r in log.runs("src")] == [again.run_id, summary.run_id]


class BrokenOnce(FilesystemConnector):
    broken = True

    def read(self, document: SourceDocument) -> bytes:
        if self.broken and document.uri.endswith("note-007.md"):
            raise RuntimeError("the source went away mid-batch")
        return super().read(document)


def test_a_failed_batch_is_rerun_from_the_record_alone(settings: Settings, tmp_path: Path) -> None:
    connector = BrokenOnce(make_corpus(tmp_path / "src", docs=12), "src")
    ingestor = Ingestor(settings, build_store(settings), HashEmbedder(384))
    record = start_run(ingestor, connector, 5)
    outcomes = []
    for index in range(record.batch_count):
        try:
            outcomes.append(run_batch(ingestor, connector, record.run_id, index).status)
        except RuntimeError:
            outcomes.append("raised")
    assert outcomes == ["done", "raised", "done"]
    partial = finish_run(ingestor, record.run_id)
    assert partial.status == "partial" and "[1]" in (partial.error or "")
    connector.broken = False
    fresh = Ingestor(settings, build_store(settings), HashEmbedder(384))  # a new task process
    retried = run_batch(fresh, connector, record.run_id, 1)
    assert (retried.status, retried.attempts) == ("done", 2)
    assert run_batch(fresh, connector, record.run_id, 0).attempts == 1  # done: not redone
    final = finish_run(fresh, record.run_id)
    assert final.status == "succeeded"
    assert final.summary["documents_ingested"] == 12


def test_rag_runs_lists_recent_runs(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAG_EMBEDDING__PROVIDER", "hash")
    monkeypatch.setenv("RAG_DATA_DIR", str(settings.data_dir))
    runner = CliRunner()
    assert runner.invoke(app, ["runs", "--json"]).output == ""  # nothing yet, nothing created
    assert not settings.data_dir.exists()
    summary = ingest(FilesystemConnector(make_corpus(tmp_path / "src", docs=3), "src"), settings)
    listed = runner.invoke(app, ["runs", "--json"])
    assert listed.exit_code == 0, listed.output
    (line,) = listed.output.splitlines()
    run = json.loads(line)
    assert (run["run_id"], run["status"], run["summary"]["new"]) == (summary.run_id, "succeeded", 3)
    monkeypatch.setattr(cli.console, "_width", 250)  # wide enough for whole run ids
    table = runner.invoke(app, ["runs"])
    assert summary.run_id is not None and summary.run_id in table.output


@pytest.mark.slow
def test_what_passes_between_tasks_stays_small_at_any_corpus_size(
    settings: Settings, tmp_path: Path
) -> None:
    sizes = {}
    for docs in (10, 10_000):
        root = tmp_path / f"corpus-{docs}"
        (root / "d").mkdir(parents=True)
        (root / "d" / ".rag-acl.toml").write_text('allow = ["group:eng"]\n')
        for i in range(docs):
            (root / "d" / f"n{i:05d}.txt").write_text(f"note {i}")
        spec = SourceSpec(name=f"s{docs}", options={"root": str(root)}, batch_size=200)
        start = time.perf_counter()
        planned = list_changes(spec, settings)
        assert planned["batches"] == (docs + 199) // 200
        sizes[docs] = len(json.dumps(planned))
        assert time.perf_counter() - start < 600
    assert sizes[10_000] < 200 and sizes[10_000] - sizes[10] < 10, sizes
