"""Incremental sync behaviour every store backend and every connector must show.

A store's test class inherits :class:`SyncContract` and provides a ``sync_settings`` fixture (hash
embedder, fresh index). A connector's test class also overrides :meth:`SyncContract.connector`:
given the folder the tests edit (files and ``.rag-acl.toml`` policies), it returns a connector that
reads the same documents from its own source (a bucket, a Graph drive, a manifest) mirrored from
that folder each time it lists. Document URIs are paths relative to the source root.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from connectors.base import Connector, Listing
from connectors.filesystem import FilesystemConnector
from rag.config import Settings
from rag.identity import UserContext
from rag.models import Acl, SourceDocument, stable_hash
from rag.pipeline import IngestSummary, SyncRun, ingest
from rag.retrieval.core import Retriever
from rag.stores import build_store
from rag.stores.base import VectorStore

ALICE = UserContext.of("alice", ["eng"])
BOB = UserContext.of("bob", ["eng"])
HANA = UserContext.of("hana", ["hr"])
GUEST = UserContext.of("guest")
SECRET = "eng/note-001.md"
HR_ONLY = 'allow = ["group:eng"]\n[files."note-001.md"]\ninherit = false\nallow = ["group:hr"]\n'


def policy(root: Path, text: str) -> None:
    (root / "eng" / ".rag-acl.toml").write_text(text, "utf-8")


ACCESS_CORE = frozenset(
    {
        "test_widened_acl_with_new_content_never_shows_old_content",
        "test_revocation_reaches_a_quarantined_document",
        "test_acl_only_change_keeps_text_and_vectors",
        "test_failed_listing_deletes_nothing",
    }
)
"""The contract tests a connector also runs on the OpenSearch store."""


def folder_connector(root: Path) -> Connector:
    return FilesystemConnector(root, "src")


_CONNECTOR: ContextVar[Callable[[Path], Connector]] = ContextVar(
    "sync_contract_connector", default=folder_connector
)


def connector_for(root: Path) -> Connector:
    """The connector of the running contract class over the folder ``root`` (source ``src``)."""
    return _CONNECTOR.get()(root)


def begin_and_revoke(settings: Settings, root: Path) -> SyncRun:
    """The listing step of a run (as the DAG's first task does), then nothing: a run killed
    between the listing step and the content step."""
    from rag.embeddings.hashing import HashEmbedder
    from rag.pipeline import Ingestor

    ingestor = Ingestor(settings, build_store(settings), HashEmbedder(384))
    planned = ingestor.begin(connector_for(root))
    ingestor.revoke(planned)
    return planned


class _Wrapped:
    def __init__(self, root: Path) -> None:
        self._inner = connector_for(root)

    @property
    def name(self) -> str:
        return self._inner.name

    def read(self, document: SourceDocument) -> bytes:
        return self._inner.read(document)


class PartialConnector(_Wrapped):
    """A listing that failed after its first document."""

    def list_documents(self) -> Listing:
        listing = self._inner.list_documents()
        return Listing(listing.source, listing.documents[:1], complete=False, errors=("timeout",))


class IncompleteConnector(_Wrapped):
    """A listing that failed part-way: what it lists is right, but it may miss documents."""

    def list_documents(self) -> Listing:
        listing = self._inner.list_documents()
        return Listing(listing.source, listing.documents, complete=False, errors=("timeout",))


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
    return ingest(connector_for(root), settings)


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
    only: frozenset[str] | None = None
    """When set, the contract tests to run (others are skipped with the reason): a connector's
    class on the second store runs the access-safety core of the contract, the whole of which
    runs for that connector on the embedded store and for folders on both stores."""

    @pytest.fixture(autouse=True)
    def _only(self, request: pytest.FixtureRequest) -> None:
        name = getattr(request.node, "originalname", request.node.name)
        if self.only is not None and name not in self.only:
            pytest.skip("runs on the embedded store for this connector (make test's budget)")

    def connector(self, root: Path) -> Connector:
        """The source under test, listing what the folder ``root`` holds (name ``src``)."""
        return folder_connector(root)

    @pytest.fixture(autouse=True)
    def _contract_connector(self) -> Iterator[None]:
        token = _CONNECTOR.set(self.connector)
        yield
        _CONNECTOR.reset(token)

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

    def test_empty_complete_listing_hides_all_but_purges_nothing(
        self, sync_settings: Settings, tmp_path: Path
    ) -> None:
        root = make_corpus(tmp_path / "src")
        run(root, sync_settings)
        count = build_store(sync_settings).count()
        for note in (root / "eng").glob("*.md"):
            note.unlink()
        summary = run(root, sync_settings)
        assert summary.tombstoned == 12 and summary.deleted == 0
        assert summary.deletion_blocked is not None
        assert "RAG_SYNC__ALLOW_MASS_DELETE" in summary.deletion_blocked
        assert uris(sync_settings, ALICE) == set()
        assert build_store(sync_settings).count() == count  # hidden, not purged
        again = run(root, sync_settings)
        assert again.deleted == 0 and again.deletion_blocked is not None

    def test_mass_delete_guard_holds_the_purge_not_the_access(
        self, sync_settings: Settings, tmp_path: Path
    ) -> None:
        root = make_corpus(tmp_path / "src", docs=3)
        run(root, sync_settings)
        count = build_store(sync_settings).count()
        keep = tmp_path / "keep"
        keep.mkdir()
        for name in ("note-000.md", "note-001.md"):  # 2 of 3: over max_delete_share
            shutil.move(root / "eng" / name, keep / name)
        summary = run(root, sync_settings)
        assert summary.tombstoned == 2 and summary.deleted == 0
        assert summary.deletion_blocked is not None
        assert uris(sync_settings, ALICE) == {"eng/note-002.md"}
        assert build_store(sync_settings).count() == count
        shutil.move(keep / "note-001.md", root / "eng" / "note-001.md")
        back = run(root, sync_settings)
        assert (back.restored, back.embedding_calls) == (1, 0)
        assert uris(sync_settings, ALICE) == {"eng/note-001.md", "eng/note-002.md"}

    def test_failed_listing_deletes_nothing(self, sync_settings: Settings, tmp_path: Path) -> None:
        root = make_corpus(tmp_path / "src")
        run(root, sync_settings)
        for note in (root / "eng").glob("note-00*.md"):
            note.unlink()
        summary = ingest(IncompleteConnector(root), sync_settings)
        assert not summary.listing_complete
        assert summary.deletion_blocked is not None and summary.tombstoned == 0
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
        planned = ingestor.begin(connector_for(root))
        ingestor.revoke(planned)  # the content work has not run yet
        assert [d.uri for d in planned.plan.changed] == ["eng/note-001.md"]
        assert "eng/note-001.md" not in uris(sync_settings, ALICE)
        assert "eng/note-001.md" in uris(sync_settings, BOB)

    # -- access never widens while a document changes (issue: permission safety) ------------
    def test_widened_acl_with_new_content_never_shows_old_content(
        self, sync_settings: Settings, tmp_path: Path
    ) -> None:
        root = make_corpus(tmp_path / "src", docs=3)
        policy(root, HR_ONLY)
        run(root, sync_settings)
        assert SECRET in uris(sync_settings, HANA) and SECRET not in uris(sync_settings, GUEST)
        policy(root, 'allow = ["group:eng"]\n[files."note-001.md"]\npublic = true\n')
        note = root / SECRET
        note.write_text(note.read_text() + "\nNow a public paragraph.\n")
        killed = begin_and_revoke(sync_settings, root)  # killed before the content step
        assert [d.uri for d in killed.plan.changed] == [SECRET]
        assert SECRET not in uris(sync_settings, GUEST)
        assert SECRET not in uris(sync_settings, ALICE)  # eng never had the old text
        assert SECRET in uris(sync_settings, HANA)  # allowed under both ACLs
        again = begin_and_revoke(sync_settings, root)  # a retried listing task changes nothing
        assert again.summary.revocation_delay_seconds is None
        assert SECRET not in uris(sync_settings, GUEST)
        summary = run(root, sync_settings)  # the next run finishes the job
        assert summary.changed == 1
        assert SECRET in uris(sync_settings, GUEST, "public paragraph")

    def test_widened_acl_and_unparseable_new_version_stays_narrow(
        self, sync_settings: Settings, tmp_path: Path
    ) -> None:
        root = make_corpus(tmp_path / "src", docs=3)
        policy(root, HR_ONLY)
        run(root, sync_settings)
        policy(root, 'allow = ["group:eng"]\n[files."note-001.md"]\npublic = true\n')
        (root / SECRET).write_bytes(b"")
        for _ in range(2):  # and on every run after
            summary = run(root, sync_settings)
            assert SECRET not in uris(sync_settings, GUEST)
            assert SECRET not in uris(sync_settings, ALICE)
        assert [r.uri for r in summary.quarantined] in ([], [SECRET])
        assert SECRET in uris(sync_settings, HANA)  # the old text, under both ACLs

    def test_revocation_reaches_a_quarantined_document(
        self, sync_settings: Settings, tmp_path: Path
    ) -> None:
        root = make_corpus(tmp_path / "src", docs=3)
        run(root, sync_settings)
        (root / SECRET).write_bytes(b"")
        broken = run(root, sync_settings)
        assert [r.uri for r in broken.quarantined] == [SECRET]
        assert SECRET in uris(sync_settings, ALICE)  # its last good version, same ACL
        policy(root, 'allow = ["group:eng"]\n[files."note-001.md"]\ndeny = ["user:Alice"]\n')
        killed = begin_and_revoke(sync_settings, root)
        assert killed.summary.revocation_delay_seconds is not None
        assert SECRET not in uris(sync_settings, ALICE)
        run(root, sync_settings)
        assert SECRET not in uris(sync_settings, ALICE)
        assert SECRET in uris(sync_settings, BOB)
        (root / SECRET).unlink()
        run(root, sync_settings)
        assert SECRET not in uris(sync_settings, BOB)

    def test_revocation_of_a_pending_document_hides_it(
        self, sync_settings: Settings, tmp_path: Path
    ) -> None:
        root = make_corpus(tmp_path / "src", docs=3)
        run(root, sync_settings)
        state_store = build_store(sync_settings).sync_state()
        doc_id = next(s for s in state_store.load("src").values() if s.uri == SECRET).document_id
        live = state_store.load("src")[doc_id]
        # a write that was in flight when the run died: the index holds an unknown mix
        state_store.put(
            [
                live.model_copy(
                    update={"status": "pending", "indexed_hash": None, "visible_acl": None}
                )
            ]
        )
        policy(root, 'allow = ["group:eng"]\n[files."note-001.md"]\npublic = true\n')
        begin_and_revoke(sync_settings, root)
        assert SECRET not in uris(sync_settings, ALICE)
        assert SECRET not in uris(sync_settings, GUEST)
        run(root, sync_settings)
        assert SECRET in uris(sync_settings, GUEST)

    def test_malformed_policy_hides_what_it_governs_and_names_it(
        self, sync_settings: Settings, tmp_path: Path
    ) -> None:
        root = make_corpus(tmp_path / "src", docs=3)
        run(root, sync_settings)
        policy(root, 'allow = ["group:eng"]\ndeny = ["user:\\u0000"]\n')
        killed = begin_and_revoke(sync_settings, root)
        assert uris(sync_settings, ALICE) == set()
        assert killed.summary.listing_complete
        (problem,) = killed.summary.policy_errors
        assert "eng/.rag-acl.toml: line 2" in problem and "U+0000" in problem
        summary = run(root, sync_settings)
        assert {r.reason for r in summary.quarantined} == {"policy_error"}
        assert all("eng/.rag-acl.toml: line 2" in r.message for r in summary.quarantined)
        assert uris(sync_settings, ALICE) == set()
        policy(root, 'allow = ["group:eng"]\n')
        run(root, sync_settings)
        assert len(uris(sync_settings, ALICE)) == 3

    def test_override_that_matches_no_file_fails_closed(
        self, sync_settings: Settings, tmp_path: Path
    ) -> None:
        root = make_corpus(tmp_path / "src", docs=3)
        run(root, sync_settings)
        policy(root, 'allow = ["group:eng"]\n[files."Note-001.md"]\ndeny = ["user:alice"]\n')
        summary = run(root, sync_settings)
        assert uris(sync_settings, ALICE) == set()
        assert any("Note-001.md" in p for p in summary.policy_errors)

    def test_deny_survives_inherit_false_below(
        self, sync_settings: Settings, tmp_path: Path
    ) -> None:
        root = make_corpus(tmp_path / "src", docs=1)
        policy(root, 'allow = ["group:eng"]\ndeny = ["user:MALLORY"]\n')
        (root / "eng" / "open").mkdir()
        (root / "eng" / "open" / ".rag-acl.toml").write_text("inherit = false\npublic = true\n")
        (root / "eng" / "open" / "faq.md").write_text("# FAQ\n\nDesign note subsystem answers.\n")
        run(root, sync_settings)
        assert "eng/open/faq.md" in uris(sync_settings, GUEST)
        assert "eng/open/faq.md" not in uris(sync_settings, UserContext.of("Mallory"))

    def test_an_index_with_pre_canonical_ids_is_migrated_by_one_sync(
        self, sync_settings: Settings, tmp_path: Path
    ) -> None:
        root = make_corpus(tmp_path / "src", docs=2)
        policy(root, 'allow = ["group:eng"]\ndeny = ["user:Mallory"]\n')
        run(root, sync_settings)
        store = build_store(sync_settings)
        states = store.sync_state().load("src")
        old = Acl.model_construct(allow=frozenset({"group:Eng"}), deny=frozenset({"user:Mallory"}))
        old_digest = stable_hash(json.dumps([sorted(old.allow), sorted(old.deny)]))
        for state in states.values():  # as an older version wrote them: ids kept their case
            store.update_acl(state.document_id, old)
        store.sync_state().put(
            [s.model_copy(update={"acl_digest": old_digest}) for s in states.values()]
        )
        store.refresh()
        summary = run(root, sync_settings)
        assert (summary.acl_only, summary.embedding_calls) == (2, 0)
        acls = {acl for _, _, acl in rows(store).values()}
        assert acls == {json.dumps([["group:eng"], ["user:mallory"]])}
        assert len(uris(sync_settings, ALICE)) == 2
        assert uris(sync_settings, UserContext.of("mallory", ["eng"])) == set()

    def test_acl_freshness_is_recorded_reported_and_bounded(
        self, sync_settings: Settings, tmp_path: Path
    ) -> None:
        root = make_corpus(tmp_path / "src", docs=3)
        before = datetime.now(UTC).replace(microsecond=0)  # the stores keep milliseconds
        first = run(root, sync_settings)
        assert first.oldest_acl_age_seconds is not None and first.oldest_acl_age_seconds < 120
        retriever = Retriever.from_settings(sync_settings)
        hits = retriever.retrieve("design note subsystem", ALICE, k=50)
        assert hits and all(
            h.chunk.acl_checked_at is not None and h.chunk.acl_checked_at >= before for h in hits
        )
        assert hits[0].to_json()["acl_version"] == hits[0].chunk.acl.digest()
        first_done = datetime.now(UTC)  # after the first (complete) listing began
        time.sleep(1.2)
        partial = PartialConnector(root)  # a listing that failed after one document
        summary = ingest(partial, sync_settings)
        assert not summary.listing_complete
        assert summary.oldest_acl_age_seconds is not None
        assert summary.oldest_acl_age_seconds >= 1.0
        # an incomplete listing confirms nothing as a whole: past the bound, all is hidden
        bound = datetime.now(UTC) - first_done - timedelta(seconds=0.3)
        assert retriever.retrieve("design note subsystem", ALICE, k=50, max_acl_age=bound) == []
        assert uris(sync_settings, ALICE) == {f"eng/note-00{i}.md" for i in range(3)}
        mid = datetime.now(UTC)
        again = run(root, sync_settings)  # a complete listing confirms the source again
        assert again.oldest_acl_age_seconds is not None
        assert again.oldest_acl_age_seconds < (datetime.now(UTC) - before).total_seconds() - 1
        recent = datetime.now(UTC) - mid + timedelta(seconds=0.5)
        fresh = Retriever.from_settings(sync_settings).retrieve(
            "design note subsystem", ALICE, k=50, max_acl_age=recent
        )
        assert {h.chunk.citation.uri for h in fresh} == {f"eng/note-00{i}.md" for i in range(3)}
        strict = sync_settings.model_copy(
            update={
                "retrieval": sync_settings.retrieval.model_copy(
                    update={"max_acl_age_seconds": 0.001}
                )
            }
        )
        time.sleep(0.01)
        assert Retriever.from_settings(strict).retrieve("design note", ALICE) == []

    def test_real_world_ids_end_to_end(self, sync_settings: Settings, tmp_path: Path) -> None:
        root = make_corpus(tmp_path / "src", docs=2)
        policy(
            root,
            """allow = ['group:CORP\\Domain Users', "user:O'Brien@Example.com",
                     "group:CN=Finance Team,OU=Groups,DC=corp,DC=example", "group:日本"]
deny = ["user:MALLORY@corp.example"]
""",
        )
        run(root, sync_settings)
        everything = {"eng/note-000.md", "eng/note-001.md"}
        assert uris(sync_settings, UserContext.of("o'brien@example.com")) == everything
        assert uris(sync_settings, UserContext.of("x", ["corp\\DOMAIN USERS"])) == everything
        cn = "cn=finance team,ou=groups,dc=corp,dc=example"
        assert uris(sync_settings, UserContext.of("y", [cn])) == everything
        assert uris(sync_settings, UserContext.of("z", ["日本"])) == everything
        mallory = UserContext.of("Mallory@Corp.Example", ["CORP\\Domain Users"])
        assert uris(sync_settings, mallory) == set()
        assert uris(sync_settings, UserContext.of("w", ["CORP\\Domain"])) == set()
