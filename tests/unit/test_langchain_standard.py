"""LangChain's own standard retriever tests (``langchain-tests``), run against
:class:`PermissionAwareRetriever` over a small LanceDB index (hash embedder), built once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_tests.integration_tests import RetrieversIntegrationTests

from rag.config import StoreSettings
from rag.identity import UserContext
from rag.retrieval.core import Retriever
from rag.retrieval.langchain import PermissionAwareRetriever
from rag.stores.lancedb import LanceDBStore
from tests.contract import EMBEDDER, INFO, make_chunk, put

# the suite's async test runs under asyncio_mode = "auto" (pyproject.toml)

USER = UserContext.of("alice", ["hr"])
CHUNKS = [
    *(make_chunk(f"hr{i}", 0, f"vacation days policy part {i}", {"group:hr"}) for i in range(4)),
    *(make_chunk(f"pub{i}", 0, f"public vacation calendar {i}", {"public"}) for i in range(3)),
    make_chunk("board", 0, "vacation days of the board", {"group:board"}),
]


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> Retriever:
    store = LanceDBStore(Path(tmp_path_factory.mktemp("lc")) / "db", StoreSettings())
    store.ensure_index(INFO)
    put(store, CHUNKS)
    return Retriever(store, EMBEDDER)


class TestPermissionAwareRetriever(RetrieversIntegrationTests):
    @pytest.fixture(autouse=True)
    def _core(self, core: Retriever) -> None:
        self._retriever_core = core

    @property
    def retriever_constructor(self) -> type[PermissionAwareRetriever]:
        return PermissionAwareRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"core": self._retriever_core, "user": USER}

    @property
    def retriever_query_example(self) -> str:
        return "How many vacation days do I get?"


def test_the_standard_suite_searched_as_its_user(core: Retriever) -> None:
    """What the suite's retriever returns is only what its user may read."""
    docs = PermissionAwareRetriever(core=core, user=USER, k=10).invoke("vacation days")
    assert len(docs) == 7
    assert "board" not in {d.metadata["document_id"] for d in docs}
