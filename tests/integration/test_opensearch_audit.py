from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.filesystem import FilesystemConnector
from evaluation.feedback import helpful_rates
from rag.audit import build_audit_sink
from rag.audit.opensearch import OpenSearchAuditSink
from rag.config import Settings
from rag.identity import UserContext
from rag.pipeline import ingest
from rag.retrieval.core import Retriever
from rag.stores.opensearch import OpenSearchStore
from tests.opensearch_node import drop, os_settings
from tests.sync_contract import make_corpus

pytestmark = pytest.mark.integration


def test_audit_records_and_feedback_in_opensearch(opensearch_url: str, tmp_path: Path) -> None:
    osettings = os_settings(opensearch_url, refresh="false")
    settings = Settings(
        data_dir=tmp_path / "data",
        embedding={"provider": "hash"},
        store={"backend": "opensearch", "opensearch": osettings.model_dump()},
    )
    try:
        ingest(FilesystemConnector(make_corpus(tmp_path / "src", docs=3), "src"), settings)
        retriever = Retriever.from_settings(settings)
        first = retriever.search("design note", UserContext.of("Alice", ["eng"]), k=3)
        retriever.search("design note", UserContext.of("bob", ["eng"]))
        sink = build_audit_sink(settings)
        assert isinstance(sink, OpenSearchAuditSink)
        (record,) = sink.records(user_id="alice")
        assert record.id == first.audit_id
        assert [h.chunk_id for h in record.hits] == [h.chunk.id for h in first.hits]
        assert len(list(sink.records(since=datetime.now(UTC) - timedelta(minutes=5)))) == 2
        assert first.audit_id is not None
        retriever.feedback(first.audit_id, helpful=True)
        (rate,) = helpful_rates(sink)
        assert (rate.source, rate.votes, rate.helpful) == ("src", 1, 1)
        assert not (tmp_path / "data" / "audit").exists()  # nothing went to local files
    finally:
        store = OpenSearchStore(osettings)
        drop(store, osettings.alias)
        store.client.indices.delete(
            index=f"{osettings.alias}-audit,{osettings.alias}-feedback", ignore_unavailable=True
        )
