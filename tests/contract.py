"""The contract every VectorStore backend must meet. Backends' test classes inherit it and
provide a ``store`` fixture holding a fresh, empty index built with ``INFO``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import pytest

from rag.embeddings.hashing import HashEmbedder
from rag.errors import (
    AccessDeniedError,
    EmbeddingMismatchError,
    FilterError,
    InvalidPrincipalError,
)
from rag.filters import Filter, filter_view, matches, parse_filter
from rag.models import Acl, Chunk, Citation, MetadataValue, SearchHit
from rag.stores.base import IndexInfo, TextSearchStore, VectorStore

EMBEDDER = HashEmbedder(64)
INFO = IndexInfo(EMBEDDER.model_id, EMBEDDER.dimension)


def make_chunk(
    doc: str,
    ordinal: int,
    text: str,
    allow: set[str],
    deny: set[str] = frozenset(),  # type: ignore[assignment]
    metadata: dict[str, MetadataValue] | None = None,
    source: str = "test",
    uri: str | None = None,
) -> Chunk:
    return Chunk(
        id=Chunk.make_id(doc, ordinal),
        document_id=doc,
        source=source,
        ordinal=ordinal,
        text=text,
        token_count=len(text.split()),
        acl=Acl(allow=frozenset(allow), deny=frozenset(deny)),
        citation=Citation(document_id=doc, uri=uri or f"{doc}.txt", title=doc, section="s", page=1),
        metadata={"k": "v"} if metadata is None else metadata,
    )


def put(store: VectorStore, chunks: list[Chunk]) -> None:
    store.upsert(chunks, EMBEDDER.embed_batch([c.text for c in chunks]))


def search(store: VectorStore, text: str, principals: set[str], k: int = 10) -> list[str]:
    vector = EMBEDDER.embed_batch([text])[0]
    return [h.chunk.id for h in store.search(vector, frozenset(principals), k)]


CORPUS = [
    make_chunk("hr", 0, "salary bands for engineers", {"group:hr"}),
    make_chunk("hr", 1, "salary review process", {"group:hr"}, {"user:mallory"}),
    make_chunk("pub", 0, "public holiday calendar salary day", {"public"}),
    make_chunk("eng", 0, "incident postmortem salary service", {"group:eng", "user:ceo"}),
]


class StoreContract:
    """Inherit and provide the ``store`` fixture."""

    def test_upsert_is_idempotent(self, store: VectorStore) -> None:
        put(store, CORPUS)
        put(store, CORPUS)
        assert store.count() == len(CORPUS)

    def test_round_trip_keeps_every_field(self, store: VectorStore) -> None:
        put(store, CORPUS)
        (hit,) = store.search(EMBEDDER.embed_batch([CORPUS[1].text])[0], frozenset({"group:hr"}), 1)
        assert hit.chunk == CORPUS[1]
        assert hit.score == pytest.approx(1.0, abs=1e-4)

    def test_acl_allow_and_deny(self, store: VectorStore) -> None:
        put(store, CORPUS)
        ids = {c.id: c for c in CORPUS}
        hr = set(search(store, "salary", {"user:alice", "group:hr", "public"}))
        assert hr == {CORPUS[0].id, CORPUS[1].id, CORPUS[2].id}
        mallory = set(search(store, "salary", {"user:mallory", "group:hr", "public"}))
        assert mallory == {CORPUS[0].id, CORPUS[2].id}
        ceo = set(search(store, "salary", {"user:ceo", "public"}))
        assert ceo == {CORPUS[2].id, CORPUS[3].id}
        nobody = set(search(store, "salary", {"user:nobody"}))
        assert nobody == set()
        assert all(ids[i].acl.permits({"user:ceo", "public"}) for i in ceo)

    def test_restrictive_filter_still_returns_k(self, store: VectorStore) -> None:
        rng = np.random.default_rng(7)
        chunks = [
            make_chunk(f"d{i}", 0, f"text {i}", {"group:rare"} if i % 50 == 0 else {"group:big"})
            for i in range(500)
        ]
        store.upsert(chunks, _unit(rng.normal(size=(500, EMBEDDER.dimension))))
        vector = _unit(rng.normal(size=(1, EMBEDDER.dimension)))[0]
        hits = store.search(vector, frozenset({"group:rare"}), 10)
        assert len(hits) == 10
        assert all("group:rare" in h.chunk.acl.allow for h in hits)

    def test_empty_principals_are_refused(self, store: VectorStore) -> None:
        put(store, CORPUS)
        with pytest.raises(AccessDeniedError):
            store.search(EMBEDDER.embed_batch(["x"])[0], frozenset(), 5)

    @pytest.mark.parametrize(
        "evil",
        [
            "user:x') OR true OR ('a",
            "user:x']) OR true --",
            "group:a' OR '1'='1",
            'group:a" OR "1"="1',
            "group:CORP\\alice",
            "group:back\\'slash",
            "user:*",
            "group:%",
            "user:o'brien@example.com",
            "group:CN=Finance Team,OU=Groups,DC=corp,DC=example",
            "group:c:0t.c|tenant|abc",
            "group:日本",
            'group:{"bool": {"must": []}}',
            "group:" + "x" * 2048,
        ],
    )
    def test_hostile_principal_is_bound_not_parsed(self, store: VectorStore, evil: str) -> None:
        """Any valid id is a literal to the store: it admits exactly what allows it."""
        mine = make_chunk("mine", 0, "salary secret of the hostile id", {evil})
        denied = make_chunk("den", 0, "salary public but denied", {"public"}, {evil})
        put(store, [*CORPUS, mine, denied])
        got = set(search(store, "salary", {evil, "public"}))
        assert got == {CORPUS[2].id, mine.id}
        assert mine.id not in search(store, "salary", {"user:alice", "group:hr", "public"})
        assert denied.id in search(store, "salary", {"user:alice", "public"})

    @pytest.mark.parametrize(
        "invalid", ["user:", "", "public OR 1=1", "user:a\x00b", "group:zero\u200bwidth"]
    )
    def test_invalid_principal_is_refused(self, store: VectorStore, invalid: str) -> None:
        put(store, CORPUS)
        with pytest.raises(InvalidPrincipalError):
            store.search(EMBEDDER.embed_batch(["salary"])[0], frozenset({invalid, "public"}), 10)

    def test_principals_match_in_canonical_form(self, store: VectorStore) -> None:
        chunk = make_chunk("d", 0, "salary note", {"user:Zoë.Ødegaard@Corp.example"}, {"user:Mal"})
        put(store, [chunk])
        assert search(store, "salary", {"user:ZOË.ØDEGAARD@corp.example"}) == [chunk.id]
        assert search(store, "salary", {"user:zoe\u0308.ødegaard@corp.example"}) == [chunk.id]
        assert search(store, "salary", {"user:Zoë.Ødegaard@Corp.example", "user:MAL"}) == []

    def test_delete_document_keeps_listed_ids(self, store: VectorStore) -> None:
        put(store, CORPUS)
        store.delete_document("hr", keep={CORPUS[0].id})
        assert store.count() == len(CORPUS) - 1
        store.delete_document("hr")
        assert store.count() == len(CORPUS) - 2
        assert set(search(store, "salary", {"group:hr", "public"})) == {CORPUS[2].id}

    def test_acl_change_by_upsert(self, store: VectorStore) -> None:
        put(store, CORPUS)
        revoked = make_chunk("hr", 0, CORPUS[0].text, {"group:hr-leads"})
        put(store, [revoked])
        assert CORPUS[0].id not in search(store, "salary", {"group:hr"})
        assert CORPUS[0].id in search(store, "salary", {"group:hr-leads"})

    def test_mismatched_model_is_refused(self, store: VectorStore) -> None:
        put(store, CORPUS)
        with pytest.raises(EmbeddingMismatchError):
            store.ensure_index(IndexInfo("another-model", EMBEDDER.dimension))
        with pytest.raises(EmbeddingMismatchError):
            store.ensure_index(IndexInfo(EMBEDDER.model_id, 768))
        store.ensure_index(INFO)  # the same model is fine


def _meta(
    mime: str, modified: str, team: str | None, level: float | None, **more: MetadataValue
) -> dict[str, MetadataValue]:
    values: dict[str, MetadataValue] = {"mime_type": mime, "modified": modified, **more}
    if team is not None:
        values["attr.team"] = team
    if level is not None:
        values["attr.level"] = level
    return values


# Every chunk says "budget"; ACLs and metadata vary (real-looking sidecar attributes, links,
# hostile-looking keys and values that are plain data).
FILTERED = [
    make_chunk(
        "handbook-leave", 0, "budget leave policy", {"public"},
        metadata=_meta("text/markdown", "2026-02-01T09:00:00+00:00", "hr", 1, link="https://x/1"),
        source="handbook", uri="handbook/leave.md",
    ),
    make_chunk(
        "handbook-pay", 0, "budget salary bands", {"group:hr"},
        metadata=_meta("application/pdf", "2025-12-31T23:59:59+00:00", "hr", 3),
        source="handbook", uri="handbook/pay.pdf",
    ),
    make_chunk(
        "wiki-oncall", 0, "budget oncall rota", {"group:eng"}, {"user:mallory"},
        metadata=_meta("text/markdown", "2026-01-15T00:00:00+00:00", "eng", 2.5, draft=True),
        source="wiki", uri="wiki/oncall.md",
    ),
    make_chunk(
        "wiki-secret", 0, "budget secret merger", {"group:board"},
        metadata=_meta("text/markdown", "2026-03-01T00:00:00+00:00", "hr", 9, draft=False),
        source="wiki", uri="wiki/secret.md",
    ),
    make_chunk(
        "wiki-quote", 0, "budget odd values", {"public"},
        metadata=_meta(
            "text/plain", "2024-06-01T00:00:00+00:00", "o'brien", -4,
            **{"x') OR true --": "v", "attr.note": "a\\b' OR '1'='1"},
        ),
        source="wiki", uri="wiki/it's.txt",
    ),
    make_chunk(
        "misc-bare", 0, "budget without metadata", {"public", "group:eng"}, metadata={},
        source="misc", uri="misc/bare",
    ),
]  # fmt: skip

FILTERS = [
    'source = "handbook"',
    'source != "handbook"',
    'path startswith "wiki/"',
    'uri = "wiki/it\'s.txt"',
    'mime_type in ["text/markdown", "application/pdf"]',
    'modified >= "2026-01-01"',
    'modified < "2026-01-15T00:00:00Z"',
    'not modified >= "2026-01-01"',
    'attr.team = "hr"',
    'attr.team != "hr"',
    'attr.team = "o\'brien"',
    "attr.level >= 2",
    "attr.level > -5 and attr.level <= 2.5",
    'attr.level = "3"',
    "draft = true",
    "not draft = true",
    'link startswith "https://"',
    '"x\') OR true --" = "v"',
    "attr.note = \"a\\\\b' OR '1'='1\"",
    'source = "handbook" and modified >= "2026-01-01" or attr.team = "eng"',
    'not (attr.team in ["hr", "eng"]) and title prefix "wiki"',
    'document_id in ["wiki-secret", "misc-bare"]',
    'metadata.mime_type = "text/plain"',
]
WIDE_PRINCIPALS = frozenset({"user:alice", "group:hr", "group:eng", "user:mallory", "public"})


def expected_ids(chunks: list[Chunk], principals: frozenset[str], flt: Filter) -> set[str]:
    """The chunks ``principals`` may read that ``flt`` admits (the reference semantics)."""
    return {c.id for c in chunks if c.acl.permits(principals) and matches(flt, filter_view(c))}


def search_modes(store: VectorStore) -> dict[str, Callable[..., list[SearchHit]]]:
    """Every search a store offers, each as ``(text, principals, k, filter=)``."""
    modes: dict[str, Callable[..., list[SearchHit]]] = {
        "dense": lambda text, p, k, **kw: store.search(EMBEDDER.embed_batch([text])[0], p, k, **kw)
    }
    if isinstance(store, TextSearchStore):
        text_store: TextSearchStore = store
        modes["bm25"] = lambda text, p, k, **kw: text_store.search_text(text, p, k, **kw)
        modes["hybrid"] = lambda text, p, k, **kw: text_store.search_hybrid(
            text, EMBEDDER.embed_batch([text])[0], p, k, **kw
        )
    return modes


class FilterContract:
    """Metadata filters on every search mode of a store; inherit and provide ``store``."""

    @pytest.mark.parametrize("text", FILTERS)
    def test_filter_admits_exactly_what_it_says_within_the_acl(
        self, store: VectorStore, text: str
    ) -> None:
        put(store, FILTERED)
        flt = parse_filter(text)
        for principals in (WIDE_PRINCIPALS, frozenset({"user:bob", "public"})):
            want = expected_ids(FILTERED, principals, flt)
            for mode, run in search_modes(store).items():
                got = {h.chunk.id for h in run("budget", principals, 50, filter=flt)}
                assert got == want, (mode, text, sorted(principals))

    def test_no_filter_widens_the_acl(self, store: VectorStore) -> None:
        put(store, FILTERED)
        everything = parse_filter(
            'source = "wiki" or not source = "wiki" or document_id startswith ""'
        )
        mallory = frozenset({"user:mallory", "group:eng", "public"})
        for mode, run in search_modes(store).items():
            hits = run("budget merger secret", mallory, 50, filter=everything)
            assert all(h.chunk.acl.permits(mallory) for h in hits), mode
            ids = {h.chunk.document_id for h in hits}
            assert "wiki-secret" not in ids and "wiki-oncall" not in ids, mode
            assert ids == {"handbook-leave", "wiki-quote", "misc-bare"}, mode

    def test_acl_fields_cannot_be_filtered(self) -> None:
        for field in ("acl_allow", "acl_deny", "allow", "deny", "ACL_ALLOW", "acl_checked_ms"):
            with pytest.raises(FilterError):
                parse_filter(f'{field} = "group:board"')

    def test_filter_with_freshness_keeps_both(self, store: VectorStore) -> None:
        stamped = [
            c.model_copy(update={"acl_checked_at": datetime(2026, 1, 1, tzinfo=UTC)})
            for c in FILTERED
        ]
        put(store, stamped)
        flt = parse_filter('source = "handbook"')
        for mode, run in search_modes(store).items():
            after = datetime(2026, 6, 1, tzinfo=UTC)
            assert run("budget", WIDE_PRINCIPALS, 50, filter=flt, acl_fresh_after=after) == []
            before = datetime(2025, 6, 1, tzinfo=UTC)
            got = run("budget", WIDE_PRINCIPALS, 50, filter=flt, acl_fresh_after=before)
            assert {h.chunk.document_id for h in got} == {"handbook-leave", "handbook-pay"}, mode


class TextSearchContract:
    """BM25 and hybrid search on a TextSearchStore; inherit and provide ``store``."""

    def test_bm25_and_hybrid_carry_the_acl(self, store: VectorStore) -> None:
        assert isinstance(store, TextSearchStore)
        put(store, CORPUS)
        mallory = frozenset({"user:mallory", "group:hr", "public"})
        bm25 = store.search_text("salary review", mallory, 10)
        assert {h.chunk.id for h in bm25} == {CORPUS[0].id, CORPUS[2].id}
        vector = EMBEDDER.embed_batch(["salary review"])[0]
        hybrid = store.search_hybrid("salary review", vector, mallory, 10)
        assert {h.chunk.id for h in hybrid} == {CORPUS[0].id, CORPUS[2].id}
        assert all(h.chunk.acl.permits(mallory) for h in hybrid)

    def test_only_keyword_match_outside_the_acl_never_appears(self, store: VectorStore) -> None:
        assert isinstance(store, TextSearchStore)
        hidden = make_chunk("vault", 0, "zanzibar treaty draft", {"group:board"})
        put(store, [*CORPUS, hidden])
        reader = frozenset({"user:alice", "group:hr", "public"})
        assert store.search_text("zanzibar", reader, 1000) == []
        vector = EMBEDDER.embed_batch(["zanzibar treaty"])[0]
        hybrid = store.search_hybrid("zanzibar treaty", vector, reader, 1000)
        assert hidden.id not in {h.chunk.id for h in hybrid}
        assert [h.chunk.id for h in store.search_text("zanzibar", {"group:board"}, 5)] == [
            hidden.id
        ]

    def test_restrictive_acl_still_returns_k_keyword_hits(self, store: VectorStore) -> None:
        assert isinstance(store, TextSearchStore)
        chunks = [
            make_chunk(
                f"d{i}", 0, f"quarterly report {i}", {"group:rare" if i % 25 == 0 else "group:big"}
            )
            for i in range(250)
        ]
        put(store, chunks)
        hits = store.search_text("quarterly report", frozenset({"group:rare"}), 10)
        assert len(hits) == 10
        assert all("group:rare" in h.chunk.acl.allow for h in hits)

    def test_keyword_search_sees_writes_deletes_and_acl_changes(self, store: VectorStore) -> None:
        assert isinstance(store, TextSearchStore)
        put(store, CORPUS)
        store.refresh()
        late = make_chunk("late", 0, "walrus migration notes", {"group:hr"})
        put(store, [late])
        store.refresh()
        hr = frozenset({"group:hr"})
        assert [h.chunk.id for h in store.search_text("walrus", hr, 5)] == [late.id]
        store.update_acl("late", Acl(allow=frozenset({"group:board"})))
        store.refresh()
        assert store.search_text("walrus", hr, 5) == []
        store.delete_document("late")
        store.refresh()
        assert store.search_text("walrus", frozenset({"group:board"}), 5) == []

    def test_acl_change_of_an_indexed_chunk_reaches_keyword_search(
        self, store: VectorStore
    ) -> None:
        assert isinstance(store, TextSearchStore)
        put(store, CORPUS)
        store.optimize()  # the keyword index now holds the chunks with their old ACL
        hr = frozenset({"group:hr"})
        assert {h.chunk.document_id for h in store.search_text("salary", hr, 10)} == {"hr"}
        store.update_acl("hr", Acl(allow=frozenset({"group:board"})))
        store.refresh()
        vector = EMBEDDER.embed_batch(["salary"])[0]
        assert store.search_text("salary", hr, 10) == []
        assert store.search_hybrid("salary", vector, hr, 10) == []
        board = {h.chunk.id for h in store.search_text("salary", frozenset({"group:board"}), 10)}
        assert board == {CORPUS[0].id, CORPUS[1].id}

    def test_empty_principals_are_refused(self, store: VectorStore) -> None:
        assert isinstance(store, TextSearchStore)
        put(store, CORPUS)
        with pytest.raises(AccessDeniedError):
            store.search_text("salary", frozenset(), 5)
        with pytest.raises(AccessDeniedError):
            store.search_hybrid("salary", EMBEDDER.embed_batch(["x"])[0], frozenset(), 5)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
