"""The contract every VectorStore backend must meet. Backends' test classes inherit it and
provide a ``store`` fixture holding a fresh, empty index built with ``INFO``."""

from __future__ import annotations

import numpy as np
import pytest

from rag.embeddings.hashing import HashEmbedder
from rag.errors import AccessDeniedError, EmbeddingMismatchError, InvalidPrincipalError
from rag.models import Acl, Chunk, Citation
from rag.stores.base import IndexInfo, VectorStore

EMBEDDER = HashEmbedder(64)
INFO = IndexInfo(EMBEDDER.model_id, EMBEDDER.dimension)


def make_chunk(
    doc: str, ordinal: int, text: str, allow: set[str], deny: set[str] = frozenset()
) -> Chunk:  # type: ignore[assignment]
    return Chunk(
        id=Chunk.make_id(doc, ordinal),
        document_id=doc,
        source="test",
        ordinal=ordinal,
        text=text,
        token_count=len(text.split()),
        acl=Acl(allow=frozenset(allow), deny=frozenset(deny)),
        citation=Citation(document_id=doc, uri=f"{doc}.txt", title=doc, section="s", page=1),
        metadata={"k": "v"},
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


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
