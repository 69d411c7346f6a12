from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from connectors.filesystem import FilesystemConnector
from rag.config import Settings
from rag.demo import corpus_path
from rag.identity import UserContext
from rag.pipeline import ingest
from rag.retrieval.core import Retriever
from rag.stores.opensearch import OpenSearchStore
from tests.opensearch_node import drop, os_settings

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_demo_corpus_on_opensearch(opensearch_url: str, tmp_path: Path, mode: str) -> None:
    corpus = Path(shutil.copytree(corpus_path(), tmp_path / "corpus"))
    osettings = os_settings(opensearch_url, refresh="false")
    settings = Settings(
        data_dir=tmp_path / "data",
        store={"backend": "opensearch", "opensearch": osettings.model_dump()},
        retrieval={"mode": mode, "top_k": 20},
    )
    summary = ingest(FilesystemConnector(corpus, "kestrel"), settings)
    assert summary.documents_ingested == 10
    store = OpenSearchStore(settings.store.opensearch)
    ids = store.chunk_ids()
    assert len(ids) == summary.chunks
    ingest(FilesystemConnector(corpus, "kestrel"), settings)
    assert store.chunk_ids() == ids  # a re-run changes nothing

    retriever = Retriever.from_settings(settings)
    question = "salary of a senior software engineer"
    alice = {
        h.chunk.citation.uri for h in retriever.retrieve(question, UserContext.of("alice", ["hr"]))
    }
    mallory = {
        h.chunk.citation.uri
        for h in retriever.retrieve(question, UserContext.of("mallory", ["hr"]))
    }
    guest = {h.chunk.citation.uri for h in retriever.retrieve(question, UserContext.of("guest"))}
    assert "hr/salary-bands.md" in alice
    assert "hr/salary-bands.md" not in mallory
    assert all(uri.startswith("public/") for uri in guest)
    drop(store, osettings.alias)
