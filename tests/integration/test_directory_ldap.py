"""The LDAP directory against a real OpenLDAP slapd (tests/slapd_node.py): paged reads, nested
groups and a cycle, aliases, revocation on re-sync, and failures that leave the store as it was."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ldap3
import pytest

from rag.config import Settings
from rag.directory import DirectoryStore, open_directory, sync_directory
from rag.errors import DirectoryError
from tests.slapd_node import (
    ADMIN_DN,
    ADMIN_PASSWORD,
    READER_DN,
    READER_PASSWORD,
    SIZE_LIMIT,
    SUFFIX,
    Slapd,
    slapd_binary,
)

pytestmark = pytest.mark.integration

PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
BULK = 250
ALICE_SID = "S-1-5-21-1004336348-1177238915-682003330-1001"
_ALICE_SID_RAW = "AQUAAAAAAAUVAAAA3PTcO4M9K0aCi6Yo6QMAAA=="


def _entry(dn: str, **attrs: str | list[str]) -> str:
    lines = [f"dn: {dn}"]
    for name, values in attrs.items():
        sep = ":: " if name.endswith("_b64") else ": "  # a binary value, base64
        for v in [values] if isinstance(values, str) else values:
            lines.append(f"{name.removesuffix('_b64')}{sep}{v}")
    return "\n".join(lines) + "\n"


def _person(uid: str, cn: str, **extra: str | list[str]) -> str:
    return _entry(
        f"uid={uid},{PEOPLE}",
        objectClass=["inetOrgPerson"],
        uid=uid,
        cn=cn,
        sn=cn.split()[-1],
        **extra,
    )


def _group(cn: str, *members: str, unique: bool = False) -> str:
    if unique:
        return _entry(
            f"cn={cn},{GROUPS}", objectClass="groupOfUniqueNames", cn=cn, uniqueMember=list(members)
        )
    return _entry(f"cn={cn},{GROUPS}", objectClass="groupOfNames", cn=cn, member=list(members))


def _user(uid: str) -> str:
    return f"uid={uid},{PEOPLE}"


def seed() -> str:
    entries = [
        _entry(SUFFIX, objectClass=["dcObject", "organization"], o="Example", dc="example"),
        _entry(
            READER_DN, objectClass="person", cn="reader", sn="reader", userPassword=READER_PASSWORD
        ),
        _entry(PEOPLE, objectClass="organizationalUnit", ou="people"),
        _entry(GROUPS, objectClass="organizationalUnit", ou="groups"),
        _entry(
            _user("alice"),
            objectClass=["inetOrgPerson", "adAccount"],
            uid="alice",
            cn="Alice Adams",
            sn="Adams",
            mail="Alice@Example.com",
            sAMAccountName="alice",
            userPrincipalName="alice@corp.example",
            objectSid_b64=_ALICE_SID_RAW,
        ),
        _person("bob", "Bob Brown", mail="bob@example.com"),
        _person("carol", "Carol Chen", mail="carol@example.com"),
        _person("obrien", "Pat O'Brien", mail="o'brien@example.com"),
        _person("Mary Ann", "Mary Ann Smith", mail="mary.ann@example.com"),
        *(_person(f"u{i:03d}", f"User {i:03d}", mail=f"u{i:03d}@example.com") for i in range(BULK)),
        _group("eng", f"cn=eng-backend,{GROUPS}", _user("bob")),
        _group(
            "eng-backend",
            _user("alice"),
            _user("Mary Ann"),
            f"{_user('obrien')}#'0101'B",
            unique=True,
        ),
        _group("a", f"cn=b,{GROUPS}", _user("carol")),
        _group("b", f"cn=a,{GROUPS}", _user("obrien")),
        _group("Finance Team", _user("alice"), _user("ghost")),
        _group("bulk", *(_user(f"u{i:03d}") for i in range(BULK))),
    ]
    return "\n".join(entries)


def _start(tmp: Path) -> Slapd:
    binary = slapd_binary()
    if binary is None:
        pytest.skip("OpenLDAP slapd is not installed (Debian: apt-get install slapd)")
    server = Slapd(binary, tmp, seed())
    server.start()
    return server


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    server = _start(tmp_path_factory.mktemp("slapd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """A server of this test alone (it is changed or stopped)."""
    server = _start(tmp_path_factory.mktemp("own-slapd"))
    try:
        yield server
    finally:
        server.stop()


def _settings(tmp_path: Path, server: Slapd, **overrides: Any) -> Settings:
    directory: dict[str, Any] = {
        "backend": "ldap",
        "ldap_url": server.url,
        "ldap_bind_dn": READER_DN,
        "ldap_password": READER_PASSWORD,
        "ldap_user_base_dns": [PEOPLE],
        "ldap_group_base_dns": [GROUPS],
        "ldap_user_filter": "(objectClass=inetOrgPerson)",
        "ldap_domain": "CORP",
        "ldap_page_size": SIZE_LIMIT,
        **overrides,
    }
    return Settings(data_dir=tmp_path / "data", directory=directory)


def _dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    tables = ["users", "user_aliases", "groups", "group_aliases", "members", "memberships"]
    with sqlite3.connect(path) as db:
        return {t: sorted(db.execute(f"SELECT * FROM {t}")) for t in tables}


def _admin(server: Slapd) -> ldap3.Connection:
    return ldap3.Connection(server.url, ADMIN_DN, ADMIN_PASSWORD, auto_bind=True)


def test_the_server_needs_paging_and_the_sync_pages(slapd: Slapd, tmp_path: Path) -> None:
    reader = ldap3.Connection(slapd.url, READER_DN, READER_PASSWORD, auto_bind=True)
    reader.search(PEOPLE, "(objectClass=inetOrgPerson)", attributes=["uid"])
    assert reader.result["description"] == "sizeLimitExceeded"  # unpaged: capped at 100
    reader.unbind()

    summary = sync_directory(_settings(tmp_path, slapd))

    assert summary.applied and summary.complete
    assert summary.users == BULK + 5 > 2 * SIZE_LIMIT
    assert summary.groups == 6
    # ghost, a member of Finance Team, does not exist: reported, not fatal
    assert summary.errors == ("1 member value(s) name no listed user or group",)
    store = open_directory(_settings(tmp_path, slapd))
    assert store.resolve("u249").groups == {"bulk"}
    assert store.resolve("u000@example.com").groups == {"bulk"}


def test_nested_groups_are_expanded_and_a_cycle_terminates(slapd: Slapd, tmp_path: Path) -> None:
    settings = _settings(tmp_path, slapd)
    sync_directory(settings)
    store = open_directory(settings)

    assert store.resolve("alice").groups == {"eng-backend", "eng", "finance team"}
    assert store.resolve("bob").groups == {"eng"}
    assert store.resolve("mary ann").groups == {"eng-backend", "eng"}
    # obrien is in b (a cycle a ⊃ b ⊃ a) and, by a uniqueMember with a UID suffix, in eng-backend
    assert store.resolve("obrien").groups == {"a", "b", "eng-backend", "eng"}
    assert store.resolve("carol").groups == {"a", "b"}


def test_every_alias_resolves_to_one_user(slapd: Slapd, tmp_path: Path) -> None:
    settings = _settings(tmp_path, slapd)
    sync_directory(settings)
    store = open_directory(settings)

    for alias in [
        "alice",
        "ALICE",
        "Alice@Example.com",
        "alice@corp.example",
        "CORP\\alice",
        ALICE_SID,
        f"uid=alice,{PEOPLE}",
        "UID=Alice,OU=People,DC=Example,DC=COM",
    ]:
        who = store.resolve(alias)
        assert (who.found, who.user_id) == (True, "alice"), alias
    assert store.resolve("o'brien@example.com").user_id == "obrien"
    assert store.resolve("  Mary Ann ").user_id == "mary ann"
    assert store.resolve("MARY.ANN@example.com").user_id == "mary ann"
    who = store.resolve("alice")
    assert {"alice@example.com", "corp\\alice", ALICE_SID.casefold()} <= who.aliases
    assert f"cn=finance team,{GROUPS}" in who.group_names
    assert "group:finance team" in who.principals()
    assert store.resolve("nobody").found is False


def test_a_membership_removed_in_ldap_is_revoked_on_resync(
    own_slapd: Slapd, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, own_slapd)
    sync_directory(settings)
    admin = _admin(own_slapd)
    admin.modify(
        f"cn=eng-backend,{GROUPS}", {"uniqueMember": [(ldap3.MODIFY_DELETE, [_user("alice")])]}
    )
    assert admin.result["description"] == "success"

    summary = sync_directory(settings)

    assert summary.removed_memberships == (("alice", "eng"), ("alice", "eng-backend"))
    assert (summary.added, summary.removed) == (0, 2)
    assert open_directory(settings).resolve("alice").groups == {"finance team"}

    admin.modify(
        f"cn=eng,{GROUPS}", {"member": [(ldap3.MODIFY_DELETE, [f"cn=eng-backend,{GROUPS}"])]}
    )
    summary = sync_directory(settings)
    assert summary.removed_memberships == (("mary ann", "eng"), ("obrien", "eng"))
    assert open_directory(settings).resolve("obrien").groups == {"a", "b", "eng-backend"}
    admin.unbind()


def test_bad_credentials_are_a_clear_error_and_change_nothing(slapd: Slapd, tmp_path: Path) -> None:
    settings = _settings(tmp_path, slapd)
    sync_directory(settings)
    before = _dump(tmp_path / "data" / "directory.sqlite")

    with pytest.raises(DirectoryError, match=r"bind .* as 'cn=reader.*invalidCredentials"):
        sync_directory(_settings(tmp_path, slapd, ldap_password="wrong"))

    assert _dump(tmp_path / "data" / "directory.sqlite") == before


def test_a_server_that_stops_mid_sync_changes_nothing(
    own_slapd: Slapd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path, own_slapd)
    sync_directory(settings)
    before = _dump(tmp_path / "data" / "directory.sqlite")
    real_search = ldap3.Connection.search
    calls = []

    def search_then_stop(self: ldap3.Connection, *args: Any, **kwargs: Any) -> Any:
        calls.append(args[0])
        if len(calls) == 2:  # the second page of users
            own_slapd.stop()
        return real_search(self, *args, **kwargs)

    monkeypatch.setattr(ldap3.Connection, "search", search_then_stop)
    with pytest.raises(DirectoryError, match=r"LDAP directory ldap://127\.0\.0\.1:\d+: "):
        sync_directory(settings)

    assert calls == [PEOPLE, PEOPLE]
    assert _dump(tmp_path / "data" / "directory.sqlite") == before
    assert DirectoryStore(tmp_path / "data" / "directory.sqlite").resolve("alice").groups == {
        "eng-backend",
        "eng",
        "finance team",
    }
    monkeypatch.undo()
    with pytest.raises(DirectoryError, match="LDAP directory"):  # and while it is down
        sync_directory(settings)
