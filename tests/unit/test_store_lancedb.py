from __future__ import annotations

from pathlib import Path

import pytest

from rag.config import StoreSettings
from rag.errors import InvalidPrincipalError
from rag.stores.lancedb import LanceDBStore, compile_acl_filter
from tests.contract import INFO, StoreContract


@pytest.fixture
def store(tmp_path: Path) -> LanceDBStore:
    s = LanceDBStore(tmp_path / "db", StoreSettings())
    s.ensure_index(INFO)
    return s


class TestLanceDBContract(StoreContract):
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
