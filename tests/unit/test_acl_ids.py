"""Compact ACL keys (issue 16 §2) on the embedded store: the keyed search path is exactly the
principal path (contract, sync contract, property), every write of ``allow``/``deny`` moves the
chunk's ``acl_key`` with it (a revocation hides at once, even from a reader whose cache is
stale), unregistered keys and pre-key tables fail closed or fall back, never open."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rag.config import Settings, StoreSettings
from rag.errors import InvalidPrincipalError
from rag.identity import PUBLIC
from rag.models import Acl
from rag.stores.acl_keys import (
    ACL_KEY,
    AclKeyOptions,
    ReadableKeyCache,
    Registry,
    RegistryRow,
    acl_key,
)
from rag.stores.lancedb import LanceDBStore, compile_acl_filter, compile_key_filter
from tests.contract import (
    CORPUS,
    EMBEDDER,
    INFO,
    FilterContract,
    StoreContract,
    TextSearchContract,
    make_chunk,
    put,
    search,
)
from tests.sync_contract import SyncContract

KEYED = StoreSettings(acl_ids_min_principals=0)
MANY = frozenset({PUBLIC, "user:alice", *(f"group:g{i:04d}" for i in range(1000))})


def _store(path: Path, settings: StoreSettings = KEYED) -> LanceDBStore:
    s = LanceDBStore(path, settings)
    s.ensure_index(INFO)
    return s


@pytest.fixture
def store(tmp_path: Path) -> LanceDBStore:
    return _store(tmp_path / "db")


@pytest.mark.slow  # the whole store contract again, keyed (make test runs it; test-fast < 90 s)
class TestKeyedLanceDBContract(StoreContract, FilterContract, TextSearchContract):
    """The whole store contract with every search on the ACL-key path."""


@pytest.fixture
def sync_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"store": settings.store.model_copy(update={"acl_ids_min_principals": 0})}
    )


@pytest.mark.slow  # the whole sync contract again, on the key path: in make test
class TestKeyedLanceDBSync(SyncContract):
    """Every sync path that writes ACLs (ACL-only changes, restores, narrowing before a
    re-embed, tombstones, quarantine hiding, revocation of pending documents), read back
    through the retriever on the ACL-key path."""


# -- the registry and the cache -----------------------------------------------------------------
_POOL = [PUBLIC, "user:a", "user:b", "group:x", "group:y", "group:z"]
_acls = st.builds(
    lambda allow, deny: Acl(allow=frozenset(allow), deny=frozenset(deny)),
    st.sets(st.sampled_from(_POOL), max_size=3),
    st.sets(st.sampled_from(_POOL), max_size=2),
)


def _rows(acls: list[Acl]) -> list[RegistryRow]:
    return [(acl_key(a), sorted(a.allow), sorted(a.deny)) for a in acls]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(acls=st.lists(_acls, max_size=30), principals=st.sets(st.sampled_from(_POOL), min_size=1))
def test_readable_keys_are_exactly_permits(acls: list[Acl], principals: set[str]) -> None:
    want = sorted({acl_key(a) for a in acls if a.permits(principals)})
    assert list(Registry(_rows(acls)).readable(frozenset(principals))) == want


def test_a_row_that_does_not_hash_to_its_key_admits_nobody() -> None:
    honest = Acl(allow=frozenset({"group:x"}))
    forged: RegistryRow = (acl_key(honest), [PUBLIC], [])  # the key of a narrower ACL
    assert Registry([forged]).readable(frozenset({PUBLIC, "user:a"})) == ()


def test_cache_is_bounded_and_keyed_by_generation() -> None:
    cache = ReadableKeyCache(AclKeyOptions(cache_size=2, refresh_seconds=3600))
    acls = [Acl(allow=frozenset({"group:x"}))]
    reads = itertools.count()

    def rows() -> list[RegistryRow]:
        next(reads)
        return _rows(acls)

    users = [frozenset({"group:x", f"user:u{i}"}) for i in range(3)]
    for user in users:
        assert cache.keys(user, lambda: 1, rows) == (acl_key(acls[0]),)
    assert len(cache._entries) == 2 and next(reads) == 1  # one registry read, LRU of two
    # a new ACL: a reader that has not re-read the generation misses it (fail closed) ...
    acls.append(Acl(allow=frozenset({"user:u0"})))
    assert len(cache.keys(users[0], lambda: 2, rows)) == 1
    cache.invalidate()  # ... until it does (a local write, or refresh_seconds later)
    assert len(cache.keys(users[0], lambda: 2, rows)) == 2


def test_invalid_principals_are_refused_on_the_keyed_path(store: LanceDBStore) -> None:
    put(store, CORPUS)
    with pytest.raises(InvalidPrincipalError):
        search(store, "salary", {"user:", "public"})


def test_key_filter_golden() -> None:
    assert compile_key_filter([]) == "false"
    assert compile_key_filter(["ab", "cd"], 5, ["s"]) == (
        "acl_key IN ('ab', 'cd') AND (acl_checked_ms >= 5 OR source IN ('s'))"
    )
    # the freshness clause is the principal path's, word for word
    assert compile_acl_filter({"public"}, 5, ["s"]).endswith(
        " AND (acl_checked_ms >= 5 OR source IN ('s'))"
    )


def test_threshold_picks_the_path(tmp_path: Path) -> None:
    options = AclKeyOptions(min_principals=64)
    assert not options.applies(frozenset(list(MANY)[:64]))
    assert options.applies(frozenset(list(MANY)[:65]))
    assert AclKeyOptions(min_principals=0).applies(frozenset({PUBLIC}))


# -- every ACL write moves the key: revocations hide on the keyed path --------------------------
def _ids(store: LanceDBStore, principals: frozenset[str]) -> set[str]:
    vector = EMBEDDER.embed_batch(["salary"])[0]
    return {h.chunk.document_id for h in store.search(vector, principals, 10)} | {
        h.chunk.document_id for h in store.search_hybrid("salary", vector, principals, 10)
    }


def _stale_reader(path: Path) -> LanceDBStore:
    """A second process's store whose registry view never refreshes by itself."""
    return LanceDBStore(path, StoreSettings(acl_ids_min_principals=0, acl_ids_refresh_seconds=1e9))


def test_update_acl_revocation_hides_at_once_even_from_a_stale_reader(tmp_path: Path) -> None:
    writer = _store(tmp_path / "db")
    put(writer, CORPUS)
    hr = frozenset({"group:hr", "user:hana", PUBLIC})
    reader = _stale_reader(tmp_path / "db")
    assert "hr" in _ids(reader, hr) and "hr" in _ids(writer, hr)  # both caches warm
    assert writer.update_acl("hr", Acl(allow=frozenset({"group:board"}))) == 2
    assert "hr" not in _ids(writer, hr)
    assert "hr" not in _ids(reader, hr)  # the chunks left the key the reader still trusts
    rows = writer._table.search().where("document_id = 'hr'").select([ACL_KEY]).to_arrow()
    assert set(rows.column(ACL_KEY).to_pylist()) == {acl_key(Acl(allow=frozenset({"group:board"})))}


def test_tombstone_hides_on_the_keyed_path(store: LanceDBStore) -> None:
    put(store, CORPUS)
    store.update_acl("pub", Acl())  # what a tombstone writes
    assert "pub" not in _ids(store, MANY)


def test_upsert_with_a_narrower_acl_hides_on_the_keyed_path(tmp_path: Path) -> None:
    writer = _store(tmp_path / "db")
    put(writer, CORPUS)
    reader = _stale_reader(tmp_path / "db")
    assert "pub" in _ids(reader, MANY)
    put(writer, [make_chunk("pub", 0, CORPUS[2].text, {"group:hr"})])
    assert "pub" not in _ids(writer, MANY) and "pub" not in _ids(reader, MANY)


def test_narrowing_by_meet_hides_on_the_keyed_path(store: LanceDBStore) -> None:
    put(store, CORPUS)
    eng = frozenset({"group:eng", PUBLIC})
    assert "eng" in _ids(store, eng)
    narrowed = CORPUS[3].acl.meet(Acl(allow=frozenset({"user:ceo"})))
    store.update_acl("eng", narrowed)
    assert "eng" not in _ids(store, eng)
    assert "eng" in _ids(store, frozenset({"user:ceo", PUBLIC}))


def test_a_new_acl_is_seen_by_the_writer_at_once(store: LanceDBStore) -> None:
    put(store, CORPUS)
    assert "hr" not in _ids(store, MANY)
    store.update_acl("hr", Acl(allow=frozenset({"group:g0007"})))  # a brand-new key
    assert "hr" in _ids(store, MANY)


def test_a_key_missing_from_the_registry_is_hidden(tmp_path: Path) -> None:
    store = _store(tmp_path / "db")
    put(store, CORPUS)
    registry = store._connect().open_table(store._acls.name)
    registry.delete(f"key = '{acl_key(CORPUS[2].acl)}'")
    fresh = _store(tmp_path / "db")
    assert "pub" not in _ids(fresh, MANY)  # fail closed
    assert "pub" in _ids(_store(tmp_path / "db", StoreSettings()), frozenset({PUBLIC}))


def test_a_table_with_unkeyed_rows_is_searched_by_principals_until_a_writer_keys_it(
    tmp_path: Path,
) -> None:
    writer = _store(tmp_path / "db")
    put(writer, CORPUS)
    writer._table.update(where="document_id = 'pub'", values_sql={ACL_KEY: "NULL"})
    reader = LanceDBStore(tmp_path / "db", KEYED)  # reads never write
    assert not reader._acls.keyed(reader._open_for_read(), reader._table_names)
    assert "pub" in _ids(reader, MANY)  # nothing disappears by surprise
    assert _ids(reader, frozenset({"group:hr", PUBLIC})) == {"hr", "pub"}
    migrated = _store(tmp_path / "db")  # a writer backfills the keys
    assert migrated._acls.keyed(migrated._table, migrated._table_names)
    assert _ids(migrated, MANY) == {"pub"}
    assert _ids(migrated, frozenset({"group:hr", PUBLIC})) == {"hr", "pub"}


def test_a_table_made_before_keys_is_migrated_by_a_writer(tmp_path: Path) -> None:
    writer = _store(tmp_path / "db")
    put(writer, CORPUS)
    writer._table.drop_columns([ACL_KEY])
    registry = writer._connect().open_table(writer._acls.name)
    registry.delete("true")
    reader = LanceDBStore(tmp_path / "db", KEYED)
    assert "pub" in _ids(reader, MANY)  # read-only: no column yet, principal path
    reopened = _store(tmp_path / "db")  # a writer adds the column, registers and backfills
    assert reopened._acls.keyed(reopened._table, reopened._table_names)
    assert _ids(reopened, MANY) == {"pub"}
    assert _ids(reopened, frozenset({"group:hr", "user:mallory", PUBLIC})) == {"hr", "pub"}


def test_backfill_skips_a_row_whose_acl_changed_meanwhile(tmp_path: Path) -> None:
    writer = _store(tmp_path / "db")
    put(writer, CORPUS)
    table = writer._table
    table.update(where="true", values_sql={ACL_KEY: "NULL"})
    stale = table.search().where("document_id = 'pub'").select(["id", "allow", "deny"]).to_arrow()
    # a writer of the previous release narrows it after the backfill read it
    table.update(where="document_id = 'pub'", values_sql={"allow": "['group:hr']"})
    writer._acls.key_rows(table, stale)
    row = table.search().where("document_id = 'pub'").select([ACL_KEY]).to_arrow()
    assert row.column(ACL_KEY).to_pylist() == [None]  # not keyed with the wider ACL
    assert not LanceDBStore(tmp_path / "db", KEYED)._acls.keyed(table, writer._table_names)


def test_optimize_indexes_the_key(store: LanceDBStore) -> None:
    put(store, CORPUS)
    store.optimize()
    assert any(ACL_KEY in i.columns for i in store._table.list_indices())
    assert _ids(store, frozenset({"group:hr", "user:mallory", PUBLIC})) == {"hr", "pub"}


def test_many_groups_get_the_same_hits_on_both_paths(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    chunks = [
        make_chunk(
            f"d{i}",
            0,
            f"salary note {i}",
            {f"group:g{int(rng.integers(0, 3000)):04d}", "group:other"},
            {"user:alice"} if i % 7 == 0 else set(),
        )
        for i in range(120)
    ]
    keyed = _store(tmp_path / "db")
    put(keyed, chunks)
    plain = _store(tmp_path / "db", StoreSettings(acl_ids_min_principals=10_000))
    vector = EMBEDDER.embed_batch(["salary note"])[0]
    for principals in (MANY, frozenset({"group:other", PUBLIC})):
        got = [h.chunk.id for h in keyed.search(vector, principals, 50)]
        assert got == [h.chunk.id for h in plain.search(vector, principals, 50)]


def test_keyed_search_never_compiles_the_principals(
    store: LanceDBStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(store, CORPUS)

    def refuse(*args: object, **kwargs: object) -> str:
        raise AssertionError("the principal path was used")

    monkeypatch.setattr("rag.stores.lancedb.compile_acl_filter", refuse)
    assert _ids(store, frozenset({"group:hr", "user:mallory", PUBLIC})) == {"hr", "pub"}


def test_a_failed_registry_read_is_retried_not_trusted() -> None:
    cache = ReadableKeyCache(AclKeyOptions(refresh_seconds=3600))
    acl = Acl(allow=frozenset({"group:x"}))

    def broken() -> list[RegistryRow]:
        raise OSError("registry unreachable")

    with pytest.raises(OSError, match="unreachable"):
        cache.keys(frozenset({"group:x"}), lambda: 1, broken)
    assert cache.keys(frozenset({"group:x"}), lambda: 1, lambda: _rows([acl])) == (acl_key(acl),)
