"""The progress callbacks of the long commands other than ingest: the dry run (documents parsed),
an evaluation suite (documents ingested, then queries run, then LLM-judged queries) and a
directory sync (entries read, then users expanded, then the write)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.filesystem import FilesystemConnector
from evaluation.runner import run_suite
from evaluation.suite import Suite
from rag.config import DirectorySettings, Settings
from rag.directory import (
    DirectoryGroup,
    DirectorySnapshot,
    DirectoryStore,
    DirectoryUser,
    sync_directory,
)
from rag.directory.closure import REPORT_EVERY
from rag.directory.scim import ScimDirectory
from rag.embeddings.hashing import HashEmbedder
from rag.estimate import estimate
from rag.progress import ProgressReporter


class Recorder:
    """A ``progress(done, total)`` callback that keeps every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int | None]] = []

    def __call__(self, done: int, total: int | None) -> None:
        self.calls.append((done, total))

    @property
    def last(self) -> tuple[int, int | None]:
        return self.calls[-1]


def _counts_up(calls: Sequence[tuple[int, int | None]]) -> None:
    """``done`` never goes back and never passes a known total."""
    dones = [d for d, _ in calls]
    assert dones == sorted(dones), calls
    assert all(total is None or done <= total for done, total in calls), calls


# -- the dry run -------------------------------------------------------------------------------


def test_a_dry_run_reports_each_document_parsed_skipped_ones_included(tmp_path: Path) -> None:
    root = tmp_path / "src"
    (root / "vault").mkdir(parents=True)
    (root / ".rag-acl.toml").write_text('allow = ["group:staff"]\n')
    (root / "vault" / ".rag-acl.toml").write_text('classification = "restricted"\n')
    for name in ("a", "b", "c"):
        (root / f"{name}.md").write_text(f"# {name}\n\nParagraph {name} for the staff.\n")
    (root / "vault" / "keys.md").write_text("# Keys\n\nBlocked from the provider.\n")
    (root / "broken.pdf").write_bytes(b"%PDF-1.7 not really a pdf")
    settings = Settings(data_dir=tmp_path / "data", embedding={"provider": "bedrock"})
    progress = Recorder()

    result = estimate(
        FilesystemConnector(root, "src"), settings, embedder=HashEmbedder(64), progress=progress
    )

    assert result.documents_to_process == 5
    assert result.by_classification["restricted"] == {"blocked": 1}
    assert [u.split(":")[0] for u in result.unparseable] == ["broken.pdf"]
    assert progress.calls == [(0, 5), (1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]


def test_a_dry_run_logs_progress_lines_through_the_reporter(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "src"
    root.mkdir()
    (root / ".rag-acl.toml").write_text("public = true\n")
    (root / "one.md").write_text("# One\n\nText.\n")
    (root / "two.md").write_text("# Two\n\nMore text.\n")
    caplog.set_level(logging.INFO, logger="rag.progress")
    reporter = ProgressReporter("dry run src", interactive=False, interval=0, heartbeat=False)

    with reporter as progress:
        estimate(
            FilesystemConnector(root, "src"),
            Settings(data_dir=tmp_path / "data", embedding={"provider": "hash"}),
            progress=progress,
        )

    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("dry run src: 0/2 documents (0%)"), lines
    assert lines[-2].startswith("dry run src: 2/2 documents (100%)"), lines
    assert lines[-1].startswith("dry run src: finished 2/2 documents in "), lines


# -- an evaluation suite -----------------------------------------------------------------------

TOPICS = ("volcano", "glacier", "enzyme", "violin", "orchard", "harbor")


def _tiny_beir(root: Path) -> Path:
    """6 documents on distinct topics; 3 judged queries."""
    data = root / "tiny"
    (data / "qrels").mkdir(parents=True)
    docs = [
        {"_id": f"d{i}", "title": f"The {t}", "text": f"All about the {t}: facts on {t}."}
        for i, t in enumerate(TOPICS)
    ]
    (data / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs))
    queries = [{"_id": f"q{j}", "text": f"facts on the {TOPICS[j]}"} for j in range(3)]
    (data / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries))
    (data / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{j}\td{j}\t1\n" for j in range(3))
    )
    return root


@pytest.mark.slow  # loads a model or ragas (make test runs it; test-fast stays under 90 s)
def test_an_eval_run_counts_documents_then_queries_then_llm_judged_queries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import evaluation.ragas_metrics as ragas_metrics

    judged: list[int] = []

    def llm_judged_scores(samples: Sequence[Any], *_: Any) -> dict[str, float]:
        judged.append(len(samples))
        return {}

    monkeypatch.setenv("RAG_EVAL_BEDROCK_MODEL_ID", "judge")  # LLM metrics on, scoring faked
    monkeypatch.setattr(ragas_metrics, "llm_judged_scores", llm_judged_scores)
    suite = Suite.model_validate(
        {
            "name": "tiny",
            "dataset": "tiny",
            "embedder": "hash",
            "modes": ["dense"],
            "k": 10,
            "personas": {"spaces": 2, "count": 1, "seed": 1},  # all, none, p0
        }
    )
    root = _tiny_beir(tmp_path / "eval")
    base = Settings(data_dir=tmp_path / "d")
    first, again = Recorder(), Recorder()

    run_suite(suite, tmp_path / "out", tmp_path / "work", base, root, progress=first)
    run_suite(suite, tmp_path / "out", tmp_path / "work", base, root, progress=again)

    assert judged == [3, 3]
    documents, queries, llm = 6, 3 * 3, 3  # 3 personas x 3 queries, 1 mode
    total = documents + queries + llm
    _counts_up(first.calls)
    assert first.calls[:documents] == [(d, total) for d in range(1, documents + 1)]
    assert first.calls[documents:] == [
        *[(documents + q, total) for q in range(1, queries + 1)],
        (total, total),  # the LLM-judged sample, when its scores come back
    ]
    # the second run finds the corpus ingested: only the queries are left to count
    assert again.calls == [*[(q, queries + llm) for q in range(1, queries + 1)], (12, 12)]


# -- a directory sync --------------------------------------------------------------------------


def _list(resources: list[dict[str, Any]], start: int, total: int) -> dict[str, Any]:
    return {"totalResults": total, "startIndex": start, "Resources": resources}


USERS = [{"id": f"u-{i}", "userName": f"user{i}"} for i in range(5)]
GROUPS = [
    {"id": "g-1", "displayName": "eng", "members": [{"value": "g-2", "type": "Group"}]},
    {"id": "g-2", "displayName": "backend", "members": [{"value": "u-1"}, {"value": "u-2"}]},
    {"id": "g-3", "displayName": "ops", "members": [{"value": "u-4"}]},
]


def test_a_scim_file_sync_counts_entries_then_users_then_the_write(tmp_path: Path) -> None:
    path = tmp_path / "scim.json"
    path.write_text(
        json.dumps({"Users": _list(USERS, 1, 5), "Groups": _list(GROUPS, 1, 3)}), encoding="utf-8"
    )
    settings = Settings(
        data_dir=tmp_path / "data", directory={"backend": "scim", "scim_path": path}
    )
    progress = Recorder()

    summary = sync_directory(settings, progress=progress)

    assert summary.applied and summary.memberships == 5
    entries, total = 8, 8 + 5 + 1  # users and groups read, users expanded, the write
    assert progress.calls == [(entries, entries), (8, total), (13, total), (total, total)]


def test_scim_paging_reports_each_page_and_the_total_once_groups_announce_it(
    tmp_path: Path,
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        start = int(request.url.params["startIndex"])
        kind = request.url.path.rsplit("/", 1)[-1]
        resources = USERS if kind == "Users" else GROUPS
        page = resources[start - 1 : start + 1]  # two per page
        return httpx.Response(200, json=_list(page, start, len(resources)))

    settings = DirectorySettings(backend="scim", scim_url="https://idp.example/scim/v2")
    source = ScimDirectory(settings, transport=httpx.MockTransport(handler))
    progress = Recorder()

    snapshot = source.snapshot(progress)

    assert (len(snapshot.users), len(snapshot.groups), snapshot.complete) == (5, 3, True)
    assert progress.calls == [(2, None), (4, None), (5, None), (7, 8), (8, 8)]


def test_the_membership_expansion_reports_every_few_users(tmp_path: Path) -> None:
    users = 2 * REPORT_EVERY + 5
    snapshot = DirectorySnapshot(
        source="test",
        users=tuple(DirectoryUser(id=f"u{i}") for i in range(users)),
        groups=(DirectoryGroup(id="all", member_users=[f"u{i}" for i in range(users)]),),
        complete=True,
    )
    store = DirectoryStore(tmp_path / "directory.sqlite")
    progress = Recorder()

    summary = store.apply(snapshot, progress=progress, steps_before=7)
    store.close()

    total = 7 + users + 1
    assert summary.memberships == users
    assert progress.calls == [
        (7, total),
        (7 + REPORT_EVERY, total),
        (7 + 2 * REPORT_EVERY, total),
        (7 + users, total),
        (total, total),
    ]


def test_an_incomplete_snapshot_reports_what_was_read_and_no_write(tmp_path: Path) -> None:
    path = tmp_path / "scim.json"
    path.write_text(
        json.dumps({"Users": _list(USERS[:3], 1, 5), "Groups": _list(GROUPS, 1, 3)}),
        encoding="utf-8",
    )
    settings = Settings(
        data_dir=tmp_path / "data", directory={"backend": "scim", "scim_path": path}
    )
    progress = Recorder()

    summary = sync_directory(settings, progress=progress)

    assert not summary.applied
    assert progress.calls == [(6, 6)]


# -- the commands ------------------------------------------------------------------------------


class EagerReporter(ProgressReporter):
    """The CLI's reporter, logging a line at every update (no terminal, no interval)."""

    def __init__(self, label: str, **options: Any) -> None:
        options.update(interactive=False, interval=0, heartbeat=False)
        super().__init__(label, **options)


def test_the_dry_run_and_directory_commands_report_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from typer.testing import CliRunner

    import rag.cli
    import rag.cli_directory

    monkeypatch.setattr(rag.cli, "ProgressReporter", EagerReporter)
    monkeypatch.setattr(rag.cli_directory, "ProgressReporter", EagerReporter)
    monkeypatch.setenv("RAG_EMBEDDING__PROVIDER", "hash")
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    root = tmp_path / "src"
    root.mkdir()
    (root / ".rag-acl.toml").write_text("public = true\n")
    (root / "one.md").write_text("# One\n\nText.\n")
    scim = tmp_path / "scim.json"
    scim.write_text(json.dumps({"Users": _list(USERS, 1, 5), "Groups": _list(GROUPS, 1, 3)}))
    monkeypatch.setenv("RAG_DIRECTORY__BACKEND", "scim")
    monkeypatch.setenv("RAG_DIRECTORY__SCIM_PATH", str(scim))
    caplog.set_level(logging.INFO, logger="rag.progress")
    runner = CliRunner()

    dry = runner.invoke(rag.cli.app, ["ingest", str(root), "--dry-run", "--json"])
    synced = runner.invoke(rag.cli.app, ["directory", "sync", "--json"])

    assert dry.exit_code == 0, dry.output
    assert synced.exit_code == 0, synced.output
    lines = [r.getMessage() for r in caplog.records if r.name == "rag.progress"]
    assert any(line.startswith("dry run src: 1/1 documents (100%)") for line in lines), lines
    assert any(line.startswith("directory sync scim: 14/14 entries (100%)") for line in lines)
