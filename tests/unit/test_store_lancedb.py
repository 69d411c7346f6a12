from __future__ import annotations

from pathlib import Path

import pytest

from rag.config import StoreSettings
from rag.errors import InvalidPrincipalError
from rag.stores.lancedb import LanceDBStore, compile_acl_filter
from tests.contract import INFO, FilterContract, StoreContract, TextSearchContract


@pytest.fixture
def store(tmp_path: Path) -> LanceDBStore:
    s = LanceDBStore(tmp_path / "db", StoreSettings())
    s.ensure_index(INFO)
    return s


class TestLanceDBContract(StoreContract, FilterContract, TextSearchContract):
    pass


def test_construction_does_no_io(tmp_path: Path) -> None:
    LanceDBStore(tmp_path / "never", StoreSettings())
    assert not (tmp_path / "never").exists()


def test_optimize_builds_label_indexes_and_search_still_filters(store: LanceDBStore) -> None:
    from tests.contract import CORPUS, put, search

    put(store, CORPUS)
    store.optimize()
    assert set(search(store, "salary", {"user:mallory", "group:hr", "public"})) == {
        CORPUS[0].id,
        CORPUS[2].id,
    }


# -- golden tests of the compiled filter -----------------------------------------------------
@pytest.mark.parametrize(
    ("principals", "expected"),
    [
        (
            {"user:alice", "public"},
            "array_has_any(allow, ['public', 'user:alice']) AND "
            "NOT array_has_any(deny, ['public', 'user:alice'])",
        ),
        (
            {"user:bob", "group:eng", "group:employees", "public"},
            "array_has_any(allow, ['group:employees', 'group:eng', 'public', 'user:bob']) AND "
            "NOT array_has_any(deny, ['group:employees', 'group:eng', 'public', 'user:bob'])",
        ),
        (
            {"user:o.brien@corp.example"},
            "array_has_any(allow, ['user:o.brien@corp.example']) AND "
            "NOT array_has_any(deny, ['user:o.brien@corp.example'])",
        ),
    ],
)
def test_compiled_filter_golden(principals: set[str], expected: str) -> None:
    assert compile_acl_filter(frozenset(principals)) == expected


def test_compiled_filter_for_hundreds_of_groups() -> None:
    principals = {"user:u", "public", *(f"group:g{i}" for i in range(300))}
    compiled = compile_acl_filter(frozenset(principals))
    assert compiled.count("'group:g") == 600  # every group in allow and in deny
    assert compiled.startswith("array_has_any(allow, [")


@pytest.mark.parametrize(
    ("evil", "literal"),
    [
        ("user:o'brien", "'user:o''brien'"),
        ("group:x']) OR true OR (['a", "'group:x'']) or true or ([''a'"),
        ("group:CORP\\a'b", "'group:corp\\a''b'"),
    ],
)
def test_compiled_filter_quotes_every_literal(evil: str, literal: str) -> None:
    compiled = compile_acl_filter(frozenset({evil}))
    assert compiled == (
        f"array_has_any(allow, [{literal}]) AND NOT array_has_any(deny, [{literal}])"
    )


def test_compiled_filter_refuses_invalid_principals() -> None:
    with pytest.raises(InvalidPrincipalError):
        compile_acl_filter(frozenset({"user:a\x00b"}))


# -- metadata filters: the property, migration of older tables ----------------------------------
@pytest.mark.slow
def test_no_filter_reaches_past_the_acl(tmp_path: Path) -> None:
    """100 drawn (filter, user) pairs on all three modes: every hit readable and admitted, and
    exactly the readable, admitted chunks. Half the corpus is written after the last optimize,
    so the keyword index lags (those rows are searched unindexed)."""
    from tests.acl_property import filter_corpus, run_filter_property
    from tests.contract import put

    store = LanceDBStore(tmp_path / "db", StoreSettings())
    store.ensure_index(INFO)
    chunks = filter_corpus()
    put(store, chunks[: len(chunks) // 2])
    store.optimize()
    put(store, chunks[len(chunks) // 2 :])
    assert run_filter_property(store, chunks, examples=100) == 300


def test_a_table_made_before_filters_and_bm25_is_refused_then_migrated(tmp_path: Path) -> None:
    from rag.errors import StoreError
    from rag.filters import parse_filter
    from tests.contract import EMBEDDER, FILTERED, WIDE_PRINCIPALS, expected_ids, put

    old = LanceDBStore(tmp_path / "db", StoreSettings())
    old.ensure_index(INFO)
    put(old, FILTERED)
    table = old._open_for_read()  # make it look like a table of the previous release
    table.drop_index("text_idx")
    table.drop_columns(["uri", "title", "mime_type", "modified_ms", "meta_str", "meta_num"])

    reader = LanceDBStore(tmp_path / "db", StoreSettings())
    vector = EMBEDDER.embed_batch(["budget"])[0]
    readable = {c.id for c in FILTERED if c.acl.permits(WIDE_PRINCIPALS)}
    hits = reader.search(vector, WIDE_PRINCIPALS, 50)  # unfiltered reads still work
    assert {h.chunk.id for h in hits} == readable
    flt = parse_filter('source = "wiki" and attr.team != "eng"')
    with pytest.raises(StoreError, match="predates metadata filters: run rag ingest once"):
        reader.search(vector, WIDE_PRINCIPALS, 50, filter=flt)
    with pytest.raises(StoreError, match=r"no keyword index.*run rag ingest once"):
        reader.search_text("budget", WIDE_PRINCIPALS, 50)

    LanceDBStore(tmp_path / "db", StoreSettings()).ensure_index(INFO)  # a writer migrates
    after = LanceDBStore(tmp_path / "db", StoreSettings())
    want = expected_ids(FILTERED, WIDE_PRINCIPALS, flt)
    assert (
        want and {h.chunk.id for h in after.search(vector, WIDE_PRINCIPALS, 50, filter=flt)} == want
    )
    assert {
        h.chunk.id for h in after.search_text("budget", WIDE_PRINCIPALS, 50, filter=flt)
    } == want


def test_update_acl_rewrites_only_the_acl(store: LanceDBStore) -> None:
    from rag.models import Acl
    from tests.contract import CORPUS, EMBEDDER, put

    put(store, CORPUS)
    vector = EMBEDDER.embed_batch([CORPUS[0].text])[0]
    before = store.search(vector, frozenset({"group:hr"}), 1)[0]
    assert store.update_acl("hr", Acl(allow=frozenset({"group:board"}))) == 2
    assert store.search(vector, frozenset({"group:hr"}), 5) == []
    after = store.search(vector, frozenset({"group:board"}), 1)[0]
    assert after.chunk == before.chunk.model_copy(
        update={"acl": Acl(allow=frozenset({"group:board"}))}
    )
    assert after.score == pytest.approx(before.score, abs=1e-6)
