"""Incremental sync behaviour every store backend must show. A backend's test class inherits
:class:`SyncContract` and provides a ``sync_settings`` fixture (hash embedder, fresh index)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from connectors.filesystem import FilesystemConnector
from rag.config import Settings
from rag.identity import UserContext
from rag.pipeline import IngestSummary, ingest
from rag.retrieval.core import Retriever
from rag.stores import build_store
from rag.stores.base import VectorStore

ALICE = UserContext.of("alice", ["eng"])
BOB = UserContext.of("bob", ["eng"])


def make_corpus(root: Path, docs: int = 12) -> Path:
    (root / "eng").mkdir(parents=True)
    (root / "eng" / ".rag-acl.toml").write_text('allow = ["group:eng"]\n')
    for i in range(docs):
        body = "\n\n".join(
            f"Paragraph {j} of design note {i} about subsystem {i}." for j in range(6)
        )
        (root / "eng" / f"note-{i:03d}.md").write_text(f"# Design note {i}\n\n{body}\n")
    return root


def run(root: Path, settings: Settings) -> IngestSummary:
    return ingest(FilesystemConnector(root, "src"), settings)


def uris(settings: Settings, user: UserContext, query: str = "design note subsystem") -> set[str]:
    hits = Retriever.from_settings(settings).retrieve(query, user, k=50)
    return {h.chunk.citation.uri for h in hits}


def rows(store: VectorStore, document_id: str | None = None) -> dict[str, tuple[str, bytes, str]]:
    """chunk id -> (text, vector bytes, ACL json), read straight from the backend."""
    from rag.stores.lancedb import LanceDBStore
    from rag.stores.opensearch import OpenSearchStore

    out: dict[str, tuple[str, bytes, str]] = {}
    if isinstance(store, LanceDBStore):
        for r in store._require_table().to_arrow().to_pylist():
            if document_id in (None, r["document_id"]):
                acl = json.dumps([r["allow"], r["deny"]])
                out[r["id"]] = (r["text"], np.asarray(r["vector"], np.float32).tobytes(), acl)
    elif isinstance(store, OpenSearchStore):
        from opensearchpy.helpers import scan

        store.refresh()
        for h in scan(store.client, index=store._target(), query={"query": {"match_all": {}}}):
            s = h["_source"]
            if document_id in (None, s["document_id"]):
                acl = json.dumps([s["acl_allow"], s["acl_deny"]])
                out[h["_id"]] = (s["text"], np.asarray(s["vector"], np.float32).tobytes(), acl)
    return out


class SyncContract:
    def test_unchanged_resync_does_nothing(self, sync_settings: Settings, tmp_path: Path) -> None:
        root = make_corpus(tmp_path / "src")
        first = run(root, sync_settings)
        assert first.new == 12
        assert first.embedding_calls > 0
        before = rows(build_store(sync_settings))
        again = run(root, sync_settings)
        assert (again.unchanged, again.changed, again.new, again.embedding_calls) == (12, 0, 0, 0)
        assert rows(build_store(sync_settings)) == before

    def test_revoking_a_user_takes_one_sync(self, sync_settings: Settings, tmp_path: Path) -> None:
        root = make_corpus(tmp_path / "src")
        (root / "eng" / ".rag-acl.toml").write_text(
            'allow = ["group:eng"]\n[files."note-003.md"]\nallow = ["user:bob"]\n'
        )
        run(root, sync_settings)
        assert "eng/note-003.md" in uris(sync_settings, ALICE)
        (root / "eng" / ".rag-acl.toml").write_text(
            'allow = ["group:eng"]\n[files."note-003.md"]\ndeny = ["user:alice"]\n'
        )
        summary = run(root, sync_settings)
        assert summary.acl_only == 1
        assert summary.embedding_calls == 0
        assert summary.revocation_delay_seconds is not None
        assert "eng/note-003.md" not in uris(sync_settings, ALICE)
        assert "eng/note-003.md" in uris(sync_settings, BOB)

    def test_deleting_a_document_takes_one_sync(
        self, sync_settings: Settings, tmp_path: Path
    ) -> None:
        root = make_corpus(tmp_path / "src")
        run(root, sync_settings)
        store = build_store(sync_settings)
        total = store.count()
        (root / "eng" / "note-005.md").unlink()
        first = run(root, sync_settings)
        assert (first.tombstoned, first.deleted) == (1, 0)
        assert "eng/note-005.md" not in uris(sync_settings, ALICE)
        second = run(root, sync_settings)
        assert (second.tombstoned, second.deleted) == (0, 1)
        assert store.count() < total
        assert "eng/note-005.md" not in {t for t, _, _ in rows(store).values()}

    def test_tombstoned_document_that_returns_is_restored_cheaply(
        self, sync_settings: Settings, tmp_path: Path
    ) -> None:
        root = make_corpus(tmp_path / "src")
        run(root, sync_settings)
        keep = tmp_path / "keep.md"
        shutil.move(root / "eng" / "note-001.md", keep)
        run(root, sync_settings)
        shutil.move(keep, root / "eng" / "note-001.md")
        summary = run(root, sync_settings)
        assert (summary.restored, summary.embedding_calls) == (1, 0)
        assert "eng/note-001.md" in uris(sync_settings, ALICE)

    def test_content_update_keeps_acl(self, sync_settings: Settings, tmp_path: Path) -> None:
        root = make_corpus(tmp_path / "src")
        run(root, sync_settings)
        note = root / "eng" / "note-002.md"
        note.write_text(note.read_text() + "\n\nA new paragraph about quantum widgets.\n")
        summary = run(root, sync_settings)
        assert (summary.changed, summary.unchanged) == (1, 11)
        assert summary.embedded_texts == 1  # only the new text reached the model
        hits = uris(sync_settings, ALICE, "quantum widgets")
        assert "eng/note-002.md" in hits
        assert "eng/note-002.md" not in uris(sync_settings, UserContext.of("mallory"), "quantum")

    def test_acl_only_change_keeps_text_and_vectors(
        self, sync_settings: Settings, tmp_path: Path
    ) -> None:
        root = make_corpus(tmp_path / "src")
        run(root, sync_settings)
        store = build_store(sync_settings)
        before = rows(store)
        (root / "eng" / ".rag-acl.toml").write_text('allow = ["group:eng", "group:pm"]\n')
        summary = run(root, sync_settings)
        assert (summary.acl_only, summary.embedding_calls, summary.changed) == (12, 0, 0)
        after = rows(store)
        assert after.keys() == before.keys()
        for cid, (text, vector, acl) in after.items():
            assert (text, vector) == before[cid][:2]
            assert acl != before[cid][2]

    def test_empty_listing_deletes_nothing(self, sync_settings: Settings, tmp_path: Path) -> None:
        root = make_corpus(tmp_path / "src")
        run(root, sync_settings)
        count = build_store(sync_settings).count()
        for note in (root / "eng").glob("*.md"):
            note.unlink()
        summary = run(root, sync_settings)
        assert summary.deletion_blocked is not None
        assert summary.tombstoned == 0
        assert build_store(sync_settings).count() == count
        assert len(uris(sync_settings, ALICE)) == 12

    def test_failed_listing_deletes_nothing(self, sync_settings: Settings, tmp_path: Path) -> None:
        root = make_corpus(tmp_path / "src")
        run(root, sync_settings)
        (root / "eng" / ".rag-acl.toml").write_text("allow = [broken\n")
        summary = run(root, sync_settings)
        assert not summary.listing_complete
        assert summary.deletion_blocked is not None
        assert len(uris(sync_settings, ALICE)) == 12

    def test_allow_mass_delete_overrides_the_guard(
        self, sync_settings: Settings, tmp_path: Path
    ) -> None:
        root = make_corpus(tmp_path / "src", docs=3)
        run(root, sync_settings)
        for note in (root / "eng").glob("*.md"):
            note.unlink()
        forced = sync_settings.model_copy(
            update={"sync": sync_settings.sync.model_copy(update={"allow_mass_delete": True})}
        )
        assert run(root, forced).tombstoned == 3
        assert uris(sync_settings, ALICE) == set()

    def test_acl_narrowed_with_a_content_change_applies_before_reembedding(
        self, sync_settings: Settings, tmp_path: Path
    ) -> None:
        from connectors.filesystem import FilesystemConnector
        from rag.embeddings.hashing import HashEmbedder
        from rag.pipeline import Ingestor

        root = make_corpus(tmp_path / "src", docs=3)
        run(root, sync_settings)
        (root / "eng" / ".rag-acl.toml").write_text(
            'allow = ["group:eng"]\n[files."note-001.md"]\ndeny = ["user:alice"]\n'
        )
        note = root / "eng" / "note-001.md"
        note.write_text(note.read_text() + "\nNew secret paragraph.\n")
        ingestor = Ingestor(sync_settings, build_store(sync_settings), HashEmbedder(384))
        planned = ingestor.begin(FilesystemConnector(root, "src"))
        ingestor.revoke(planned)  # the content work has not run yet
        assert [d.uri for d in planned.plan.changed] == ["eng/note-001.md"]
        assert "eng/note-001.md" not in uris(sync_settings, ALICE)
        assert "eng/note-001.md" in uris(sync_settings, BOB)
