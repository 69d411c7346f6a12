"""An audit trail of every retrieval, and the users' feedback on it.

Each retrieval writes one :class:`AuditRecord`: when, who (user id, and the token's issuer and
subject when the identity was verified from one), the size and a hash of the principal set, a
hash of the query (its text only when enabled), mode, k, the returned chunks with the version
of each one's ACL, and the latency. Sinks, one per module: JSON lines under
``<data_dir>/audit/`` (default) or an OpenSearch index beside the chunks. If the write fails,
the retrieval fails (``RAG_AUDIT__FAIL_CLOSED``, default true).
"""

from __future__ import annotations

from rag.audit.base import AuditHit, AuditRecord, AuditSink, Feedback, principals_digest
from rag.audit.jsonl import JsonlAuditSink
from rag.config import Settings

__all__ = [
    "AuditHit",
    "AuditRecord",
    "AuditSink",
    "Feedback",
    "JsonlAuditSink",
    "build_audit_sink",
    "principals_digest",
]


def build_audit_sink(settings: Settings) -> AuditSink | None:
    """The sink the settings name (no I/O yet), or None when auditing is off."""
    audit = settings.audit
    if not audit.enabled:
        return None
    sink = audit.sink
    if sink == "auto":
        sink = "opensearch" if settings.store.backend == "opensearch" else "jsonl"
    if sink == "opensearch":
        from rag.audit.opensearch import OpenSearchAuditSink

        return OpenSearchAuditSink(settings.store.opensearch)
    return JsonlAuditSink(audit.path or settings.data_dir / "audit")
