"""Incremental sync: durable per-document state and the plan of each run."""

from __future__ import annotations

from rag.sync.plan import Plan, acl_digest, plan_sync
from rag.sync.state import DocState, SyncStateStore

__all__ = ["DocState", "Plan", "SyncStateStore", "acl_digest", "plan_sync"]
