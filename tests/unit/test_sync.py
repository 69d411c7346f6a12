from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.base import Listing
from rag.config import Settings
from rag.models import Acl, SourceDocument
from rag.sync import DocState, acl_digest, plan_sync
from tests.sync_contract import SyncContract

NOW = datetime(2026, 1, 2, tzinfo=UTC)


@pytest.fixture
def sync_settings(settings: Settings) -> Settings:
    return settings


class TestLanceDBSync(SyncContract):
    pass


def doc(i: int, content: str = "c", acl: Acl | None = Acl.public()) -> SourceDocument:  # noqa: B008
    return SourceDocument(
        source="s",
        id=f"d{i}",
        uri=f"{i}.md",
        title="t",
        mime_type="text/markdown",
        content_hash=content,
        size_bytes=1,
        modified_at=NOW,
        acl=acl,
    )


def state(d: SourceDocument, status: str = "live", **kw: object) -> DocState:
    return DocState.model_validate(
        {
            "source": "s",
            "document_id": d.id,
            "uri": d.uri,
            "content_hash": d.content_hash,
            "acl_digest": acl_digest(d),
            "status": status,
            "updated_at": NOW,
            **kw,
        }
    )


def plan(docs: list[SourceDocument], states: list[DocState], complete: bool = True, **kw: object):  # type: ignore[no-untyped-def]
    listing = Listing("s", tuple(docs), complete, () if complete else ("boom",))
    options = {"max_delete_share": 0.5, "tombstone_grace": timedelta(0), **kw}
    return plan_sync(listing, {s.document_id: s for s in states}, NOW, **options)  # type: ignore[arg-type]


def test_plan_classifies_every_kind_of_change() -> None:
    old = [doc(0), doc(1), doc(2), doc(3, acl=None), doc(4)]
    listed = [
        doc(0),
        doc(1, content="new"),
        doc(2, acl=Acl(allow=frozenset({"group:x"}))),
        doc(3, acl=None),
        doc(5),
    ]
    states = [
        state(old[0]),
        state(old[1]),
        state(old[2]),
        state(old[3], "quarantined"),
        state(old[4]),
    ]
    p = plan(listed, states)
    assert [d.id for d in p.unchanged] == ["d0", "d3"]
    assert [d.id for d in p.changed] == ["d1"]
    assert [d.id for d in p.acl_only] == ["d2"]
    assert [d.id for d in p.new] == ["d5"]
    assert [s.document_id for s in p.tombstone] == ["d4"]


def test_pending_state_is_redone() -> None:
    d = doc(0)
    assert [x.id for x in plan([d], [state(d, "pending")]).changed] == ["d0"]


def test_tombstones_are_purged_only_after_grace() -> None:
    d = doc(0)
    gone = state(d, "tombstoned", tombstoned_at=NOW - timedelta(hours=1))
    assert plan([doc(1)], [gone, state(doc(1))], tombstone_grace=timedelta(hours=2)).purge == []
    assert plan([doc(1)], [gone, state(doc(1))], tombstone_grace=timedelta(minutes=5)).purge == [
        gone
    ]


def test_guards() -> None:
    docs = [doc(i) for i in range(10)]
    states = [state(d) for d in docs]
    assert plan([], states).deletion_blocked
    assert plan(docs[:4], states).deletion_blocked  # 60% would go
    assert not plan(docs[:6], states).deletion_blocked
    incomplete = plan(docs[:9], states, complete=False)
    assert incomplete.deletion_blocked
    assert incomplete.tombstone == []
    assert len(plan([], states, allow_mass_delete=True).tombstone) == 10


def test_full_resync_reprocesses_everything() -> None:
    docs = [doc(i) for i in range(3)]
    assert len(plan(docs, [state(d) for d in docs], full_resync=True).changed) == 3


@pytest.mark.slow
def test_kill_and_resume_converges_to_a_clean_run(tmp_path: Path) -> None:
    from tests.kill_resume import assert_kill_and_resume

    assert_kill_and_resume(tmp_path, backend={"backend": "lancedb"})
