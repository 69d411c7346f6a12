"""What a sync run must do, decided from a listing and the stored states. A pure function."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from connectors.base import Listing
from rag.config import SyncSettings
from rag.models import SourceDocument
from rag.sync.state import DocState

NO_ACL = "no-acl"


def acl_digest(document: SourceDocument) -> str:
    return document.acl.digest() if document.acl is not None else NO_ACL


@dataclass
class Plan:
    new: list[SourceDocument] = field(default_factory=list)
    changed: list[SourceDocument] = field(default_factory=list)
    acl_only: list[SourceDocument] = field(default_factory=list)
    restore: list[SourceDocument] = field(default_factory=list)  # tombstoned, back unchanged
    unchanged: list[SourceDocument] = field(default_factory=list)
    tombstone: list[DocState] = field(default_factory=list)
    purge: list[DocState] = field(default_factory=list)
    deletion_blocked: str | None = None

    @property
    def to_process(self) -> list[SourceDocument]:
        """Documents to parse, chunk, embed and load."""
        return [*self.new, *self.changed]


def plan_sync(
    listing: Listing,
    states: dict[str, DocState],
    now: datetime,
    *,
    max_delete_share: float,
    tombstone_grace: timedelta,
    full_resync: bool = False,
    allow_mass_delete: bool = False,
) -> Plan:
    plan = Plan()
    _classify(plan, listing, states, full_resync)
    _deletions(plan, listing, states, now, max_delete_share, tombstone_grace, allow_mass_delete)
    return plan


def plan_with(
    listing: Listing,
    states: dict[str, DocState],
    now: datetime,
    sync: SyncSettings,
    full_resync: bool = False,
) -> Plan:
    """``plan_sync`` with the limits of the sync settings."""
    return plan_sync(
        listing,
        states,
        now,
        max_delete_share=sync.max_delete_share,
        tombstone_grace=timedelta(seconds=sync.tombstone_grace_seconds),
        full_resync=full_resync,
        allow_mass_delete=sync.allow_mass_delete,
    )


def _classify(plan: Plan, listing: Listing, states: dict[str, DocState], full_resync: bool) -> None:
    for doc in listing.documents:
        state = states.get(doc.id)
        if state is None:
            plan.new.append(doc)
            continue
        same_content = state.content_hash == doc.content_hash
        same_acl = state.acl_digest == acl_digest(doc)
        if full_resync or state.status == "pending" or not same_content:
            plan.changed.append(doc)
        elif state.status == "quarantined":
            (plan.unchanged if same_acl else plan.changed).append(doc)
        elif state.status == "tombstoned":
            # restorable with no embedding only if the hidden chunks are of this very content
            (plan.restore if state.indexed_hash == doc.content_hash else plan.changed).append(doc)
        elif not same_acl:
            plan.acl_only.append(doc)
        else:
            plan.unchanged.append(doc)


def _deletions(
    plan: Plan,
    listing: Listing,
    states: dict[str, DocState],
    now: datetime,
    max_delete_share: float,
    tombstone_grace: timedelta,
    allow_mass_delete: bool,
) -> None:
    """A complete listing that omits documents hides them at once (tombstones: unreadable,
    restorable with no embedding calls). The mass-delete guard holds back only the *purge*, so
    a bad listing cannot destroy the index, yet never keeps access open. A listing that failed
    or is incomplete changes nothing."""
    listed = {d.id for d in listing.documents}
    missing = [s for s in states.values() if s.document_id not in listed]
    to_tombstone = [s for s in missing if s.status != "tombstoned"]
    to_purge = [
        s
        for s in missing
        if s.status == "tombstoned"
        and s.tombstoned_at is not None
        and now - s.tombstoned_at >= tombstone_grace
    ]
    if not (to_tombstone or to_purge):
        return
    if not listing.complete:
        plan.deletion_blocked = (
            f"listing of {listing.source} is incomplete ({len(listing.errors)} errors): "
            f"deleting nothing, {len(to_tombstone)} documents would have been removed"
        )
        return
    plan.tombstone = to_tombstone
    share = len(missing) / len(states) if states else 0.0
    if share > max_delete_share and not allow_mass_delete:
        plan.deletion_blocked = (
            f"{len(missing)} of {len(states)} documents of {listing.source} are gone from its "
            f"listing ({share:.0%} > max_delete_share {max_delete_share:.0%}): they stay hidden "
            f"(tombstoned) but are not purged; set RAG_SYNC__ALLOW_MASS_DELETE=true (or raise "
            f"RAG_SYNC__MAX_DELETE_SHARE) to purge them"
        )
    else:
        plan.purge = to_purge
