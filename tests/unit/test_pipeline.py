from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from connectors.filesystem import FilesystemConnector
from rag.config import Settings
from rag.demo import corpus_path
from rag.identity import UserContext
from rag.pipeline import ingest
from rag.quarantine import Quarantine
from rag.retrieval.core import Retriever
from rag.stores import build_store
from rag.stores.lancedb import LanceDBStore


def snapshot(settings: Settings) -> list[tuple[str, ...]]:
    store = LanceDBStore(settings.store_uri, settings.store)
    table = store._require_table().to_arrow().sort_by("id").drop_columns(["acl_checked_ms"])
    return [tuple(map(str, row.values())) for row in table.to_pylist()]  # all but check times


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return Path(shutil.copytree(corpus_path(), tmp_path / "corpus"))


def test_demo_corpus_end_to_end(settings: Settings, corpus: Path) -> None:
    summary = ingest(FilesystemConnector(corpus, "kestrel"), settings)
    assert summary.documents_listed == 12
    assert summary.documents_ingested == 10
    assert summary.chunks >= 10 and summary.tokens > 0 and summary.embedding_calls >= 1
    assert {(q.uri, q.reason) for q in summary.quarantined} == {
        ("drafts/untitled.txt", "missing_acl"),
        ("engineering/scanned-whiteboard.pdf", "parse_error"),
    }
    assert {"list", "read", "parse", "chunk", "embed", "load"} <= set(summary.seconds)
    retriever = Retriever.from_settings(settings)
    alice = retriever.retrieve(
        "salary senior software engineer", UserContext.of("alice", ["hr"]), k=20
    )
    mallory = retriever.retrieve(
        "salary senior software engineer", UserContext.of("mallory", ["hr"]), k=20
    )
    guest = retriever.retrieve("salary senior software engineer", UserContext.of("guest"), k=20)
    uris = lambda hits: {h.chunk.citation.uri for h in hits}  # noqa: E731
    assert "hr/salary-bands.md" in uris(alice)
    assert "hr/salary-bands.md" not in uris(mallory)
    assert uris(guest) <= {
        "public/company-overview.md",
        "public/office-guide.txt",
        "public/holiday-calendar.html",
    }
    assert "drafts/untitled.txt" not in uris(alice) | uris(mallory) | uris(guest)


def test_rerun_leaves_index_identical(settings: Settings, corpus: Path) -> None:
    ingest(FilesystemConnector(corpus, "kestrel"), settings)
    first = snapshot(settings)
    ingest(FilesystemConnector(corpus, "kestrel"), settings)
    assert snapshot(settings) == first


def test_shrinking_document_drops_stale_chunks(settings: Settings, tmp_path: Path) -> None:
    root = tmp_path / "src"
    root.mkdir()
    (root / ".rag-acl.toml").write_text("public = true\n")
    (root / "long.md").write_text("\n\n".join(f"# Part {i}\n\nText of part {i}." for i in range(8)))
    settings = settings.model_copy(
        update={
            "chunking": settings.chunking.model_copy(update={"max_tokens": 20, "overlap_tokens": 0})
        }
    )
    ingest(FilesystemConnector(root, "s"), settings)
    store = LanceDBStore(settings.store_uri, settings.store)
    assert store.count() == 8
    (root / "long.md").write_text("# Part 0\n\nOnly one part left.")
    ingest(FilesystemConnector(root, "s"), settings)
    assert store.count() == 1


def test_removed_policy_removes_chunks_and_quarantines(settings: Settings, tmp_path: Path) -> None:
    root = tmp_path / "src"
    (root / "team").mkdir(parents=True)
    (root / "team" / ".rag-acl.toml").write_text('allow = ["group:team"]\n')
    (root / "team" / "notes.md").write_text("Team notes about the launch plan.")
    ingest(FilesystemConnector(root, "s"), settings)
    store = LanceDBStore(settings.store_uri, settings.store)
    assert store.count() == 1
    (root / "team" / ".rag-acl.toml").unlink()
    summary = ingest(FilesystemConnector(root, "s"), settings)
    assert [q.reason for q in summary.quarantined] == ["missing_acl"]
    assert store.count() == 0
    (root / "team" / ".rag-acl.toml").write_text('allow = ["group:team"]\n')
    ingest(FilesystemConnector(root, "s"), settings)
    assert Quarantine(settings.quarantine_dir).records("s") == []


def test_bad_inputs_are_quarantined_and_good_files_ingested(
    settings: Settings, tmp_path: Path
) -> None:
    root = tmp_path / "mixed"
    root.mkdir()
    (root / ".rag-acl.toml").write_text('allow = ["group:all"]\n')
    text = "Grüße aus Köln: naïve café owners pay 5 € for crème brûlée."
    (root / "cp1252.txt").write_bytes(text.encode("cp1252"))
    (root / "latin1.txt").write_bytes(text.replace("€", "EUR").encode("latin-1"))
    (root / "utf16.txt").write_bytes(text.encode("utf-16"))
    (root / "utf8.md").write_text(f"# Notes\n\n{text}", "utf-8")
    (root / "corrupt.pdf").write_bytes(b"%PDF-1.7\n1 0 obj <</Type /Catalog" + os.urandom(64))
    (root / "random.docx").write_bytes(os.urandom(4096))
    (root / "empty.txt").write_bytes(b"")
    (root / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))

    summary = ingest(FilesystemConnector(root, "mixed"), settings)

    reasons = {q.uri: q.reason for q in summary.quarantined}
    assert reasons == {
        "corrupt.pdf": reasons["corrupt.pdf"],
        "random.docx": "parse_error",
        "empty.txt": "empty",
        "picture.png": "unsupported_format",
    }
    assert reasons["corrupt.pdf"] in {"parse_error", "empty"}
    assert summary.documents_ingested == 4
    records = Quarantine(settings.quarantine_dir).records("mixed")
    assert {r.uri for r in records} == set(reasons)
    assert all(r.message for r in records)
    hits = Retriever.from_settings(settings).retrieve(
        "crème brûlée café", UserContext.of("u", ["all"]), k=10
    )
    texts = {h.chunk.citation.uri: h.chunk.text for h in hits}
    assert set(texts) == {"cp1252.txt", "latin1.txt", "utf16.txt", "utf8.md"}
    assert all("crème brûlée" in t for t in texts.values())


def test_a_lost_sync_state_leaves_no_stale_chunk_visible(
    settings: Settings, tmp_path: Path
) -> None:
    """The index, not the sync state, says which chunks of an earlier version remain: with the
    state wiped, a shorter new version still removes the old version's extra chunks."""
    root = tmp_path / "src"
    root.mkdir()
    (root / ".rag-acl.toml").write_text("public = true\n")
    (root / "d.md").write_text("\n\n".join(f"# Part {i}\n\n" + "word " * 300 for i in range(6)))
    ingest(FilesystemConnector(root, "s"), settings)
    store = build_store(settings)
    before = store.chunk_ids()
    assert len(before) > 2
    states = store.sync_state().load("s")
    store.sync_state().delete("s", list(states))
    (root / "d.md").write_text("# Short\n\nOnly this now.")
    ingest(FilesystemConnector(root, "s"), settings)
    assert len(build_store(settings).chunk_ids()) == 1
