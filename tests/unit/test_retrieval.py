from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from rag.audit.jsonl import JsonlAuditSink
from rag.config import StoreSettings
from rag.errors import (
    AccessDeniedError,
    ConfigurationError,
    EmbeddingError,
    EmbeddingMismatchError,
    InvalidRequestError,
    StoreError,
)
from rag.filters import Eq
from rag.identity import UserContext
from rag.models import Acl, Chunk, Citation, SearchHit
from rag.retrieval.citations import cite
from rag.retrieval.core import Mode, Retriever
from rag.retrieval.expand import merge_texts, overlap
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


# -- query options, async, batch, reranking, expansion, citations (issue 15 §4, issue 17) ------
GUEST = UserContext.of("guest")
ALICE = UserContext.of("alice", ["hr"])


def _chunk(
    doc: str,
    ordinal: int,
    text: str,
    allow: set[str],
    section: str | None = None,
    metadata: dict[str, str] | None = None,
) -> Chunk:
    return Chunk(
        id=Chunk.make_id(doc, ordinal),
        document_id=doc,
        source="wiki",
        ordinal=ordinal,
        text=text,
        token_count=len(text.split()),
        acl=Acl(allow=frozenset(allow)),
        citation=Citation(document_id=doc, uri=f"{doc}.md", title=doc.title(), section=section),
        metadata=metadata or {},
    )


# "guide": sections Laptops (0-2) and Badges (3-5); its chunk 4 is restricted to hr (an ACL
# narrowed on one chunk), so a guest's context stops before it.
GUIDE = [
    _chunk("guide", i, f"guide {topic} step {i} for new hires", allow, section)
    for i, (topic, section, allow) in enumerate(
        [
            ("laptop", "Laptops", {"public"}),
            ("laptop", "Laptops", {"public"}),
            ("laptop", "Laptops", {"public"}),
            ("badge", "Badges", {"public"}),
            ("badge", "Badges", {"group:hr"}),
            ("badge", "Badges", {"public"}),
        ]
    )
]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> LanceDBStore:
    """A read-only index for the tests that only query: CORPUS and GUIDE."""
    s = LanceDBStore(tmp_path_factory.mktemp("shared") / "db", StoreSettings())
    s.ensure_index(INFO)
    put(s, [*CORPUS, *GUIDE])
    return s


def _ids(hits: list[SearchHit]) -> list[str]:
    return [h.chunk.id for h in hits]


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_each_mode_runs_per_call_and_keeps_the_acl(shared: LanceDBStore, mode: Mode) -> None:
    retriever = Retriever(shared, EMBEDDER, top_k=10)
    hits = retriever.retrieve("salary review", ALICE, mode=mode)
    assert hits[0].chunk.id == CORPUS[1].id  # both words match only there
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(h.chunk.acl.permits(ALICE.principals()) for h in hits)
    guest = retriever.retrieve("salary review", GUEST, mode=mode)
    assert guest and {h.chunk.document_id for h in guest} <= {"pub", "guide"}


def test_scores_are_on_each_modes_scale(shared: LanceDBStore) -> None:
    retriever = Retriever(shared, EMBEDDER, top_k=3)
    dense = retriever.retrieve("salary review process", ALICE)
    bm25 = retriever.retrieve("salary review process", ALICE, mode="bm25")
    hybrid = retriever.retrieve("salary review process", ALICE, mode="hybrid")
    assert dense[0].score == pytest.approx(1.0, abs=1e-4)  # cosine of identical texts
    assert bm25[0].score > 1.0  # BM25 is unbounded
    assert hybrid[0].score == pytest.approx(2 / 61)  # first in both rankings


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_min_score_applies_to_every_mode(shared: LanceDBStore, mode: Mode) -> None:
    retriever = Retriever(shared, EMBEDDER, top_k=10)
    every = retriever.retrieve("salary review", ALICE, mode=mode)
    cut = every[1].score
    kept = retriever.retrieve("salary review", ALICE, mode=mode, min_score=cut)
    assert kept == [h for h in every if h.score >= cut] and len(kept) < len(every)
    strict = Retriever(shared, EMBEDDER, top_k=10, min_score=cut, mode=mode)
    assert strict.retrieve("salary review", ALICE) == kept  # the default, from the constructor
    assert strict.retrieve("salary review", ALICE, min_score=float("-inf")) == every


def test_filter_narrows_and_never_widens(shared: LanceDBStore) -> None:
    retriever = Retriever(shared, EMBEDDER, top_k=10)
    only_hr = Eq("document_id", "hr")
    for mode in ("dense", "bm25", "hybrid"):
        hits = retriever.retrieve("salary", ALICE, mode=mode, filter=only_hr)
        assert {h.chunk.document_id for h in hits} == {"hr"}, mode
        assert retriever.retrieve("salary", GUEST, mode=mode, filter=only_hr) == [], mode
    assert retriever.retrieve("salary", ALICE, filter=Eq("source", "nowhere")) == []


def test_no_identity_no_result_in_every_entry_point(shared: LanceDBStore) -> None:
    retriever = Retriever(shared, EMBEDDER)
    calls: list[Callable[[], object]] = [
        lambda: retriever.search("salary", None, mode="hybrid", expand="neighbors"),
        lambda: retriever.retrieve_many(["salary"], None),
        lambda: asyncio.run(retriever.aretrieve("salary", None)),
        lambda: asyncio.run(retriever.aretrieve_many(["salary"], None)),
    ]
    for call in calls:
        with pytest.raises(AccessDeniedError):
            call()


def test_unknown_options_are_refused(shared: LanceDBStore) -> None:
    retriever = Retriever(shared, EMBEDDER)
    with pytest.raises(InvalidRequestError, match="unknown query options"):
        retriever.retrieve("salary", ALICE, top_n=3)  # type: ignore[call-arg]
    with pytest.raises(InvalidRequestError, match="expand"):
        retriever.retrieve("salary", ALICE, expand="document")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="unknown retrieval mode"):
        retriever.retrieve("salary", ALICE, mode="sparse")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="needs a reranker"):
        retriever.retrieve("salary", ALICE, rerank=True)


def test_async_and_batch_answer_as_the_sync_call(shared: LanceDBStore) -> None:
    retriever = Retriever(shared, EMBEDDER, top_k=3)
    queries = ["salary review", "badge step"]
    for mode in ("dense", "bm25", "hybrid"):
        one_by_one = [retriever.retrieve(q, ALICE, mode=mode) for q in queries]
        assert retriever.retrieve_many(queries, ALICE, mode=mode) == one_by_one
        assert asyncio.run(retriever.aretrieve_many(queries, ALICE, mode=mode)) == one_by_one
        assert asyncio.run(retriever.aretrieve(queries[0], ALICE, mode=mode)) == one_by_one[0]
    assert retriever.retrieve_many([], ALICE) == []


class _Reverse:
    """A reranker double: ranks the texts it is given in reverse, scores 0.9, 0.8, ..."""

    model_id = "test/reverse"

    def __init__(self, fail: bool = False) -> None:
        self.seen: list[int] = []
        self.fail = fail

    def rerank(self, query: str, texts: Sequence[str], top_n: int | None = None) -> list[Any]:
        self.seen.append(len(texts))
        if self.fail:
            raise EmbeddingError("reranker down")
        order = list(reversed(range(len(texts))))[:top_n]
        return [(i, 0.9 - 0.1 * rank) for rank, i in enumerate(order)]


def test_rerank_reorders_the_candidates_with_the_rerankers_scores(shared: LanceDBStore) -> None:
    reranker = _Reverse()
    retriever = Retriever(shared, EMBEDDER, top_k=2, reranker=reranker, rerank_candidates=6)
    first_stage = Retriever(shared, EMBEDDER, top_k=6).retrieve("guide step", GUEST)
    hits = retriever.retrieve("guide step", GUEST)  # on by default with a reranker
    assert reranker.seen == [6]  # the top 6 candidates, not k
    assert _ids(hits) == _ids(first_stage[::-1][:2])
    assert [h.score for h in hits] == pytest.approx([0.9, 0.8])
    assert all(h.chunk.acl.permits(GUEST.principals()) for h in hits)
    assert _ids(retriever.retrieve("guide step", GUEST, rerank=False)) == _ids(first_stage[:2])
    assert _ids(retriever.retrieve("guide step", GUEST, min_score=0.85)) == _ids(hits[:1])


def test_a_failing_reranker_falls_back_or_raises(shared: LanceDBStore) -> None:
    first = Retriever(shared, EMBEDDER, top_k=2).retrieve("guide step", GUEST)
    fallback = Retriever(shared, EMBEDDER, top_k=2, reranker=_Reverse(fail=True))
    # first-stage order and scores; min_score (on the reranker's scale) is not applied
    assert fallback.retrieve("guide step", GUEST, min_score=0.5) == first
    strict = Retriever(
        shared, EMBEDDER, top_k=2, reranker=_Reverse(fail=True), rerank_on_error="raise"
    )
    with pytest.raises(EmbeddingError):
        strict.retrieve("guide step", GUEST)
    with pytest.raises(EmbeddingError):
        asyncio.run(strict.aretrieve("guide step", GUEST))


def test_expand_neighbors_merges_per_document_in_reading_order(shared: LanceDBStore) -> None:
    retriever = Retriever(shared, EMBEDDER, top_k=1)
    result = retriever.search("guide laptop step 1 for new hires", GUEST, expand="neighbors")
    assert _ids(result.hits) == [GUIDE[1].id]
    (passage,) = result.passages
    assert [c.ordinal for c in passage.chunks] == [0, 1, 2]
    assert passage.hit_ids == {GUIDE[1].id} and passage.score == result.hits[0].score
    assert passage.text == "\n\n".join(c.text for c in GUIDE[:3])
    assert _ids(result.chunks) == [c.id for c in GUIDE[:3]]
    # two adjacent hits share their context once: one passage, no chunk twice
    two = retriever.search("guide laptop step", GUEST, k=2, filter=Eq("document_id", "guide"))
    merged = retriever.search(
        "guide laptop step", GUEST, k=2, filter=Eq("document_id", "guide"), expand="neighbors"
    )
    ordinals = sorted(h.chunk.ordinal for h in two.hits)
    assert ordinals[1] - ordinals[0] <= 2
    assert len(merged.passages) == 1
    chunks = [c.ordinal for c in merged.passages[0].chunks]
    assert chunks == list(range(max(ordinals[0] - 1, 0), ordinals[1] + 2))


def test_expansion_fetches_under_the_acl(shared: LanceDBStore) -> None:
    retriever = Retriever(shared, EMBEDDER, top_k=1)
    query = "guide badge step 3 for new hires"
    guest = retriever.search(query, GUEST, expand="neighbors")
    assert [c.ordinal for c in guest.passages[0].chunks] == [2, 3]  # 4 is hr's only
    hr = retriever.search(query, ALICE, expand="neighbors")
    assert [c.ordinal for c in hr.passages[0].chunks] == [2, 3, 4]
    section = retriever.search(query, ALICE, expand="section")
    assert [c.ordinal for c in section.passages[0].chunks] == [3, 4, 5]  # Badges only
    guest_section = retriever.search(query, GUEST, expand="section")
    assert [c.ordinal for c in guest_section.passages[0].chunks] == [3]  # stops at the gap
    assert asyncio.run(retriever.asearch(query, GUEST, expand="neighbors")).passages == (
        guest.passages
    )


def test_a_store_that_leaks_context_is_refused(shared: LanceDBStore) -> None:
    class LeakyFetch:
        """The shared store, whose fetch ignores the ACL."""

        def __getattr__(self, name: str) -> Any:
            return getattr(shared, name)

        def fetch_chunks(self, ids: Sequence[str], principals: object, **kw: object) -> list[Chunk]:
            return [c for c in GUIDE if c.id in set(ids)]

    retriever = Retriever(LeakyFetch(), EMBEDDER, top_k=1)
    with pytest.raises(StoreError, match="may not read"):
        retriever.search("guide badge step 3 for new hires", GUEST, expand="neighbors")


def test_the_audit_record_lists_the_context_shown(shared: LanceDBStore, tmp_path: Path) -> None:
    sink = JsonlAuditSink(tmp_path / "audit")
    retriever = Retriever(shared, EMBEDDER, top_k=1, audit=sink)
    result = retriever.search("guide laptop step 1 for new hires", GUEST, expand="neighbors")
    (record,) = list(sink.records())
    assert record.id == result.audit_id
    assert [h.chunk_id for h in record.hits] == [c.id for c in GUIDE[:3]]


def test_merge_texts_keeps_the_chunkers_overlap_once() -> None:
    first = "Badges are issued at the front desk on your first day."
    second = "on your first day. Bring a photo ID and your offer letter."
    assert merge_texts([first, second]) == (
        "Badges are issued at the front desk on your first day. Bring a photo ID and your "
        "offer letter."
    )
    assert merge_texts(["a b c", "c d"]) == "a b c\n\nc d"  # too short to be an overlap
    assert overlap("x" * 20, "x" * 20) == 20


def test_citations_carry_a_safe_deep_link() -> None:
    s3 = _chunk("d", 2, "t", {"public"}, "Intro", {"link": "s3://bucket/key.pdf"})
    ref = cite(s3)
    assert (ref.uri, ref.title, ref.section, ref.ordinal, ref.link) == (
        "d.md",
        "D",
        "Intro",
        2,
        "s3://bucket/key.pdf",
    )
    sharepoint = "https://contoso.sharepoint.com/sites/hr/Shared%20Documents/a.docx"
    assert cite(_chunk("d", 0, "t", {"public"}, metadata={"link": sharepoint})).link == sharepoint
    for bad in ("javascript:alert(1)", "data:text/html,x", "//evil.example/x", "a\nb", ""):
        assert cite(_chunk("d", 0, "t", {"public"}, metadata={"link": bad})).link == "d.md"
    assert cite(_chunk("d", 0, "t", {"public"})).link == "d.md"  # a folder's file path


def test_langchain_search_kwargs_and_per_call_kwargs(shared: LanceDBStore) -> None:
    from rag.retrieval.langchain import PermissionAwareRetriever

    core = Retriever(shared, EMBEDDER, top_k=5)
    lc = PermissionAwareRetriever(core=core, user=ALICE, search_kwargs={"k": 3, "mode": "bm25"})
    docs = lc.invoke("salary review")
    assert [d.id for d in docs] == _ids(core.retrieve("salary review", ALICE, 3, mode="bm25"))
    assert len(lc.invoke("salary review", k=1)) == 1  # the call's k over search_kwargs
    assert all(d.metadata["score"] > 1.0 for d in docs)  # BM25 scores: the mode was honoured
    cut = docs[1].metadata["score"]
    assert [d.id for d in lc.invoke("salary review", score_threshold=cut)] == [
        d.id for d in docs[:2]
    ]
    assert lc.invoke("salary review", mode="dense")[0].metadata["score"] <= 1.0
    with pytest.raises(InvalidRequestError, match="unknown retriever arguments"):
        lc.invoke("salary review", top_k=1)
    with pytest.raises(ValueError, match="unknown retriever arguments"):  # pydantic's, at once
        PermissionAwareRetriever(core=core, user=ALICE, search_kwargs={"fetch_k": 20})


@pytest.mark.parametrize(
    "given",
    [
        Eq("document_id", "hr"),
        'document_id = "hr"',
        {"op": "eq", "field": "document_id", "value": "hr"},
        {"document_id": "hr"},
        {"document_id": ["hr", "nowhere"]},
    ],
    ids=["model", "text", "json", "equalities", "any-of"],
)
def test_langchain_filter_in_every_form(shared: LanceDBStore, given: object) -> None:
    from rag.retrieval.langchain import PermissionAwareRetriever

    core = Retriever(shared, EMBEDDER, top_k=10)
    lc = PermissionAwareRetriever(core=core, user=ALICE, search_kwargs={"filter": given})
    assert {d.metadata["document_id"] for d in lc.invoke("salary")} == {"hr"}
    guest = PermissionAwareRetriever(core=core, user=GUEST)
    assert guest.invoke("salary", filter=given) == []  # a filter never widens


def test_langchain_metadata_follows_the_conventions(shared: LanceDBStore) -> None:
    from rag.retrieval.langchain import PermissionAwareRetriever

    lc = PermissionAwareRetriever(core=Retriever(shared, EMBEDDER, top_k=1), user=GUEST)
    (doc,) = lc.invoke("guide badge step 3 for new hires")
    assert doc.metadata["source"] == "guide.md"  # the document's path/URI
    assert doc.metadata["source_name"] == "wiki"
    assert (doc.metadata["title"], doc.metadata["section"], doc.metadata["ordinal"]) == (
        "Guide",
        "Badges",
        3,
    )
    assert doc.metadata["link"] == "guide.md"
    (expanded,) = lc.invoke("guide badge step 3 for new hires", expand="neighbors")
    assert expanded.page_content == f"{GUIDE[2].text}\n\n{GUIDE[3].text}"
    assert expanded.metadata["chunk_ids"] == [GUIDE[2].id, GUIDE[3].id]
    assert expanded.metadata["hit_chunk_ids"] == [GUIDE[3].id]
    assert asyncio.run(lc.ainvoke("guide badge step 3 for new hires")) == [doc]
