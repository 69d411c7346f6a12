"""Every retrieval setting reaches the code that uses it (issue 12): ``Retriever.from_settings``
and ``rag query`` honour each field of :class:`RetrievalSettings`.

The tests walk the model's fields: a field added without an entry in ``EFFECTS`` fails them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rag.cli import app
from rag.config import RetrievalSettings, Settings
from rag.embeddings import build_embedder
from rag.embeddings.base import Vectors, embed_query
from rag.errors import ConfigurationError
from rag.identity import UserContext
from rag.models import SearchHit
from rag.retrieval.core import Retriever
from rag.stores import build_store
from rag.stores.base import IndexInfo, VectorStore
from tests.contract import make_chunk

runner = CliRunner()
TEXTS = [f"vacation days policy number {i} for everyone" for i in range(9)]
QUERY = TEXTS[4]
EXACT_CASE = "vacation days policy number 4 for Guest only"  # a case-sensitive source's ACL


@dataclass
class Spy:
    """Delegates to a real store and records each search: which method, and k. It offers text
    search (answered by the dense search) so that the mode can be observed on any backend."""

    inner: VectorStore
    calls: list[tuple[str, int]] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def index_info(self) -> IndexInfo | None:
        return self.inner.index_info()

    def count(self) -> int:
        return self.inner.count()

    def search(
        self, vector: Vectors, principals: AbstractSet[str], k: int, **kw: Any
    ) -> list[SearchHit]:
        self.calls.append(("search", k))
        return self.inner.search(vector, principals, k, **kw)

    def search_text(
        self, text: str, principals: AbstractSet[str], k: int, **kw: Any
    ) -> list[SearchHit]:
        self.calls.append(("search_text", k))
        return self.inner.search(_embed(text), principals, k, **kw)

    def search_hybrid(
        self, text: str, vector: Vectors, principals: AbstractSet[str], k: int, **kw: Any
    ) -> list[SearchHit]:
        self.calls.append(("search_hybrid", k))
        return self.inner.search(vector, principals, k, **kw)


def _embed(text: str) -> Vectors:
    return embed_query(build_embedder(Settings(embedding={"provider": "hash"}).embedding), text)


@dataclass(frozen=True)
class Effect:
    """A non-default value of one retrieval setting and how to see it took effect."""

    value: Any
    env: str
    seen: Callable[[list[tuple[str, int]], list[SearchHit]], bool]


EFFECTS: dict[str, Effect] = {
    "top_k": Effect(
        3, "3", lambda calls, hits: calls == [("search_hybrid", 3)] and len(hits) == 3
    ),
    "mode": Effect(
        "dense", "dense", lambda calls, hits: calls == [("search", 5)] and len(hits) == 5
    ),
    "min_score": Effect(0.99, "0.99", lambda calls, hits: [h.chunk.text for h in hits] == [QUERY]),
    # the fixture's chunks were never confirmed by a source listing: a bound hides them all
    "max_acl_age_seconds": Effect(3600.0, "3600", lambda calls, hits: calls and hits == []),
    "case_sensitive_principals": Effect(
        True, "true", lambda calls, hits: EXACT_CASE in [h.chunk.text for h in hits]
    ),
}


def test_every_retrieval_setting_has_an_observable_effect() -> None:
    assert set(RetrievalSettings.model_fields) == set(EFFECTS)
    defaults = RetrievalSettings()
    for name, effect in EFFECTS.items():
        assert getattr(defaults, name) != effect.value, f"{name}: pick a non-default value"
        RetrievalSettings.model_validate({name: effect.value})  # a valid value


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A LanceDB index made with the hash embedder the settings name: nine public chunks and
    one only the exact-case user ``Guest`` may read."""
    settings = Settings(data_dir=tmp_path / "data", embedding={"provider": "hash"})
    embedder = build_embedder(settings.embedding)
    store = build_store(settings)
    store.ensure_index(IndexInfo(embedder.model_id, embedder.dimension))
    chunks = [make_chunk(f"d{i}", 0, text, {"public"}) for i, text in enumerate(TEXTS)]
    chunks.append(make_chunk("cs", 0, EXACT_CASE, {"user.cs:Guest"}))
    store.upsert(chunks, embedder.embed_batch([c.text for c in chunks]))
    return settings.data_dir


@pytest.fixture
def spies(monkeypatch: pytest.MonkeyPatch) -> list[Spy]:
    """Every store the retriever builds from settings, wrapped in a Spy."""
    made: list[Spy] = []

    def spied(settings: Settings) -> Spy:
        made.append(Spy(build_store(settings)))
        return made[-1]

    monkeypatch.setattr("rag.retrieval.core.build_store", spied)
    return made


def _settings(data_dir: Path, **retrieval: Any) -> Settings:
    return Settings(data_dir=data_dir, embedding={"provider": "hash"}, retrieval=retrieval)


@pytest.mark.parametrize("name", list(EFFECTS))
def test_from_settings_honours_each_field(data_dir: Path, spies: list[Spy], name: str) -> None:
    effect = EFFECTS[name]
    default_hits = Retriever.from_settings(_settings(data_dir)).retrieve(QUERY, _guest())
    assert not effect.seen(spies[0].calls, default_hits), "the default must look different"
    retriever = Retriever.from_settings(_settings(data_dir, **{name: effect.value}))
    hits = retriever.retrieve(QUERY, _guest())
    assert effect.seen(spies[1].calls, hits), (name, spies[1].calls, hits)


@pytest.mark.parametrize("name", list(EFFECTS))
def test_the_langchain_adapter_honours_each_field(
    data_dir: Path, spies: list[Spy], name: str
) -> None:
    from rag.retrieval.langchain import PermissionAwareRetriever

    effect = EFFECTS[name]
    core = Retriever.from_settings(_settings(data_dir, **{name: effect.value}))
    docs = PermissionAwareRetriever(core=core, user=_guest()).invoke(QUERY)
    hits = [
        _hit({"score": d.metadata["score"], "text": d.page_content, **d.metadata}) for d in docs
    ]
    assert effect.seen(spies[0].calls, hits), (name, spies[0].calls, hits)


@pytest.mark.parametrize("name", list(EFFECTS))
def test_rag_query_honours_each_field(
    data_dir: Path, spies: list[Spy], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    effect = EFFECTS[name]
    monkeypatch.setenv("RAG_EMBEDDING__PROVIDER", "hash")
    monkeypatch.setenv("RAG_DATA_DIR", str(data_dir))
    monkeypatch.setenv(f"RAG_RETRIEVAL__{name.upper()}", effect.env)
    result = runner.invoke(app, ["query", QUERY, "--user", "Guest", "--json"])
    assert result.exit_code == 0, result.output
    hits = [_hit(h) for h in json.loads(result.stdout)["hits"]]
    assert effect.seen(spies[0].calls, hits), (name, spies[0].calls, hits)


def test_rag_query_k_option_overrides_top_k(
    data_dir: Path, spies: list[Spy], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAG_EMBEDDING__PROVIDER", "hash")
    monkeypatch.setenv("RAG_RETRIEVAL__TOP_K", "3")
    result = runner.invoke(
        app, ["query", QUERY, "--user", "guest", "-k", "2", "--data-dir", str(data_dir), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert spies[0].calls == [("search_hybrid", 2)] and len(json.loads(result.stdout)["hits"]) == 2


class _DenseOnly:
    """A store without text search (a dense-only backend): the real one, less search_text and
    search_hybrid."""

    def __init__(self, inner: VectorStore) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name in ("search_text", "search_hybrid"):
            raise AttributeError(name)
        return getattr(self._inner, name)


@pytest.mark.parametrize("mode", ["bm25", "hybrid"])
def test_text_modes_on_a_store_without_text_search_fail_at_construction(
    tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("rag.retrieval.core.build_store", lambda s: _DenseOnly(build_store(s)))
    settings = _settings(tmp_path / "data", mode=mode)
    with pytest.raises(ConfigurationError, match=f"{mode} needs a store with text search"):
        Retriever.from_settings(settings)
    assert not (tmp_path / "data").exists()
    monkeypatch.setenv("RAG_EMBEDDING__PROVIDER", "hash")
    monkeypatch.setenv("RAG_RETRIEVAL__MODE", mode)
    result = runner.invoke(
        app, ["query", "x", "--user", "guest", "--data-dir", str(tmp_path / "data")]
    )
    assert result.exit_code == 1
    assert "needs a store with text search" in " ".join(result.output.split())


def _guest() -> UserContext:
    return UserContext.of("Guest")


def _hit(payload: dict[str, Any]) -> SearchHit:
    chunk = make_chunk(payload["document_id"], 0, payload["text"], {"public"})
    return SearchHit(chunk=chunk, score=payload["score"])
