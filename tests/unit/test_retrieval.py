from __future__ import annotations

import re
from pathlib import Path

import pytest

from rag.config import StoreSettings
from rag.errors import AccessDeniedError, EmbeddingMismatchError, StoreError
from rag.identity import UserContext
from rag.models import SearchHit
from rag.retrieval.core import Retriever
from rag.stores.lancedb import LanceDBStore
from tests.contract import CORPUS, EMBEDDER, INFO, make_chunk, put


@pytest.fixture
def store(tmp_path: Path) -> LanceDBStore:
    s = LanceDBStore(tmp_path / "db", StoreSettings())
    s.ensure_index(INFO)
    put(s, CORPUS)
    return s


def test_retrieve_filters_by_user(store: LanceDBStore) -> None:
    retriever = Retriever(store, EMBEDDER, top_k=10)
    alice = retriever.retrieve("salary", UserContext.of("alice", ["hr"]))
    guest = retriever.retrieve("salary", UserContext.of("guest"))
    assert {h.chunk.document_id for h in alice} == {"hr", "pub"}
    assert {h.chunk.document_id for h in guest} == {"pub"}
    assert [h.score for h in alice] == sorted((h.score for h in alice), reverse=True)


def test_no_identity_no_result(store: LanceDBStore) -> None:
    with pytest.raises(AccessDeniedError):
        Retriever(store, EMBEDDER).retrieve("salary", None)


def test_a_leaking_store_is_refused() -> None:
    class LeakyStore:
        def index_info(self) -> object:
            return INFO

        def search(
            self, vector: object, principals: object, k: int, **kw: object
        ) -> list[SearchHit]:
            return [SearchHit(chunk=make_chunk("x", 0, "t", {"group:secret"}), score=1.0)]

    with pytest.raises(StoreError):
        Retriever(LeakyStore(), EMBEDDER).retrieve("q", UserContext.of("bob"))  # type: ignore[arg-type]


def test_model_mismatch_is_refused(store: LanceDBStore) -> None:
    from rag.embeddings.hashing import HashEmbedder

    with pytest.raises(EmbeddingMismatchError):
        Retriever(store, HashEmbedder(32)).retrieve("q", UserContext.of("bob"))


def test_min_score_drops_weak_hits(store: LanceDBStore) -> None:
    hits = Retriever(store, EMBEDDER, top_k=10, min_score=0.99).retrieve(
        CORPUS[2].text, UserContext.of("guest")
    )
    assert [h.chunk.id for h in hits] == [CORPUS[2].id]


def test_langchain_adapter(store: LanceDBStore) -> None:
    from rag.retrieval.langchain import PermissionAwareRetriever

    lc = PermissionAwareRetriever(core=Retriever(store, EMBEDDER), user=UserContext.of("ceo"), k=3)
    docs = lc.invoke("incident postmortem")
    assert docs[0].id == CORPUS[3].id
    assert docs[0].metadata["document_id"] == "eng"
    assert docs[0].metadata["uri"] == "eng.txt"
    assert all(d.metadata["document_id"] in {"eng", "pub"} for d in docs)
    with pytest.raises(AccessDeniedError):
        PermissionAwareRetriever(core=Retriever(store, EMBEDDER), user=None).invoke("salary")


def test_only_the_adapter_imports_langchain() -> None:
    root = Path(__file__).resolve().parents[2] / "rag"
    pattern = re.compile(r"^\s*(from|import) langchain", re.MULTILINE)
    importers = sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*.py") if pattern.search(p.read_text())
    )
    assert importers == ["retrieval/langchain.py"]


def test_rag_never_imports_airflow() -> None:
    root = Path(__file__).resolve().parents[2] / "rag"
    assert not [
        p
        for p in root.rglob("*.py")
        if "import airflow" in p.read_text() or "from airflow" in p.read_text()
    ]
