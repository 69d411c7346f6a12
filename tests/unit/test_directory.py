"""The group directory: SCIM from a file and from a loopback HTTP server, the store's closure
(nested groups, cycles, a 1,000-level chain), aliases, and snapshots that must not be applied."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from rag.config import DirectorySettings, Settings
from rag.directory import (
    DirectoryGroup,
    DirectorySnapshot,
    DirectoryStore,
    DirectoryUser,
    build_source,
    open_directory,
    sync_directory,
)
from rag.directory.ldap import LdapDirectory, decode_value, dn_key, sid_string
from rag.errors import ConfigurationError, DirectoryError, InvalidPrincipalError

ENTRA_ID = "0F8FAD5B-D9CB-469F-A165-70867728950E"
TOKEN = "t0ken"

USERS: list[dict[str, Any]] = [
    {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": "u-1",
        "userName": "alice@corp.example",
        "externalId": ENTRA_ID,
        "emails": [
            {"value": "Alice@Example.com", "primary": True},
            {"value": "a.adams@example.com"},
        ],
    },
    {"id": "u-2", "userName": "bob"},
    {"id": "u-3", "UserName": "o'brien@example.com"},  # attribute names are case-insensitive
    {"id": "u-4", "userName": "Carol Chen", "emails": [{"value": "carol@example.com"}]},
]
GROUPS: list[dict[str, Any]] = [
    {
        "id": "g-1",
        "displayName": "eng",
        "members": [
            {"value": "g-2", "type": "Group"},
            {"value": "u-2", "type": "User"},
        ],
    },
    {
        "id": "g-2",
        "displayName": "eng-backend",
        "externalId": "S-1-5-21-7-1105",
        "members": [
            {"value": "u-1", "$ref": "https://idp.example/scim/v2/Users/u-1"},
        ],
    },
    {"id": "g-3", "displayName": "a", "members": [{"value": "g-4"}, {"value": "u-4"}]},
    {
        "id": "g-4",
        "displayName": "b",
        "members": [{"value": "g-3"}, {"value": "u-3"}, {"value": "u-404"}],
    },
]


def _list_response(resources: list[dict[str, Any]], start: int, total: int) -> dict[str, Any]:
    return {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": len(resources),
        "Resources": resources,
    }


def _expect_directory(store: DirectoryStore) -> None:
    assert store.resolve("alice@corp.example").groups == {"eng-backend", "eng"}
    assert store.resolve("bob").groups == {"eng"}
    assert store.resolve("o'brien@example.com").groups == {"a", "b"}  # a ⊃ b ⊃ a
    assert store.resolve("carol chen").groups == {"a", "b"}
    for alias in ["Alice@Example.com", "a.adams@example.com", ENTRA_ID.lower(), "u-1"]:
        assert store.resolve(alias).user_id == "alice@corp.example", alias
    assert {"g-2", "s-1-5-21-7-1105"} <= store.resolve("alice@corp.example").group_names


# -- SCIM from a file --------------------------------------------------------------------------


def _scim_file(path: Path, users_total: int | None = None) -> Path:
    total = len(USERS) if users_total is None else users_total
    doc = {
        "Users": [_list_response(USERS[:2], 1, total), _list_response(USERS[2:], 3, total)],
        "Groups": _list_response(GROUPS, 1, len(GROUPS)),
    }
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def _scim_settings(tmp_path: Path, **directory: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", directory={"backend": "scim", **directory})


def test_scim_file_pages_nested_groups_cycle_and_aliases(tmp_path: Path) -> None:
    settings = _scim_settings(tmp_path, scim_path=_scim_file(tmp_path / "scim.json"))

    summary = sync_directory(settings)

    assert (summary.applied, summary.users, summary.groups) == (True, 4, 4)
    assert summary.errors == ("1 member reference(s) name no listed user or group",)
    assert summary.memberships == summary.added == 7
    _expect_directory(open_directory(settings))


def test_an_unreadable_scim_file_is_a_directory_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DirectoryError, match="cannot read the SCIM file"):
        sync_directory(_scim_settings(tmp_path, scim_path=bad))
    bad.write_text(json.dumps({"Users": {"Resources": []}}))
    with pytest.raises(DirectoryError, match="not a SCIM ListResponse"):
        sync_directory(_scim_settings(tmp_path, scim_path=bad))
    assert not (tmp_path / "data" / "directory.sqlite").exists()


# -- SCIM over HTTP ------------------------------------------------------------------------------


@dataclass
class Scim:
    """A loopback SCIM service: pages by startIndex/count (at most ``max_page``), wants a
    bearer token, and can be told to lose a page."""

    users: list[dict[str, Any]]
    groups: list[dict[str, Any]]
    max_page: int = 2
    lose_start: int | None = None  # answer an empty page from this startIndex of /Users
    requests: list[tuple[str, int, int, str]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def scim() -> Iterator[Scim]:
    state = Scim(users=USERS, groups=GROUPS)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            start, count = int(query.get("startIndex", 1)), int(query.get("count", 100))
            auth = self.headers.get("Authorization", "")
            kind = parts.path.rsplit("/", 1)[-1]
            state.requests.append((kind, start, count, auth))
            if auth != f"Bearer {TOKEN}":
                return self._send(401, {"status": "401", "detail": "bad token"})
            resources = {"Users": state.users, "Groups": state.groups}.get(kind)
            if resources is None or parts.path != f"/scim/v2/{kind}":
                return self._send(404, {"status": "404"})
            page = resources[start - 1 : start - 1 + min(count, state.max_page)]
            if kind == "Users" and state.lose_start is not None and start >= state.lose_start:
                page = []
            self._send(200, _list_response(page, start, len(resources)))

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/scim+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/scim/v2"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def test_scim_over_http_pages_with_a_bearer_token(scim: Scim, tmp_path: Path) -> None:
    settings = _scim_settings(tmp_path, scim_url=scim.url, scim_token=TOKEN, scim_page_size=3)

    summary = sync_directory(settings)

    assert summary.applied and summary.users == 4
    assert scim.requests == [  # the server gives at most 2 per page, whatever was asked
        ("Users", 1, 3, f"Bearer {TOKEN}"),
        ("Users", 3, 3, f"Bearer {TOKEN}"),
        ("Groups", 1, 3, f"Bearer {TOKEN}"),
        ("Groups", 3, 3, f"Bearer {TOKEN}"),
    ]
    _expect_directory(open_directory(settings))


def test_scim_http_failures_are_directory_errors(scim: Scim, tmp_path: Path) -> None:
    with pytest.raises(DirectoryError, match=r"Users answered 401: .*bad token"):
        sync_directory(_scim_settings(tmp_path, scim_url=scim.url, scim_token="wrong"))
    with pytest.raises(DirectoryError, match="answered 404"):
        sync_directory(_scim_settings(tmp_path, scim_url=scim.url + "/nowhere", scim_token=TOKEN))
    closed = scim.url.replace(scim.url.split(":")[2].split("/")[0], "1")  # port 1: refused
    with pytest.raises(DirectoryError, match=r"SCIM request to .* failed: ConnectError"):
        sync_directory(_scim_settings(tmp_path, scim_url=closed, scim_token=TOKEN))
    assert not (tmp_path / "data" / "directory.sqlite").exists()


def test_an_incomplete_snapshot_is_refused_and_changes_nothing(scim: Scim, tmp_path: Path) -> None:
    settings = _scim_settings(tmp_path, scim_url=scim.url, scim_token=TOKEN)
    sync_directory(settings)
    before = _dump(tmp_path / "data" / "directory.sqlite")
    scim.lose_start = 3  # the second page of users comes back empty

    summary = sync_directory(settings)

    assert (summary.applied, summary.complete, summary.removed) == (False, False, 0)
    assert summary.errors[0] == "Users: 2 of 4 resources listed"
    assert _dump(tmp_path / "data" / "directory.sqlite") == before
    assert open_directory(settings).resolve("carol chen").groups == {"a", "b"}


# -- the store -------------------------------------------------------------------------------


def _snapshot(
    users: dict[str, list[str]], groups: dict[str, tuple[list[str], list[str]]], **kw: Any
) -> DirectorySnapshot:
    return DirectorySnapshot(
        source="test",
        users=tuple(DirectoryUser(id=u, aliases=a) for u, a in users.items()),
        groups=tuple(
            DirectoryGroup(id=g, member_users=mu, member_groups=mg)
            for g, (mu, mg) in groups.items()
        ),
        complete=kw.get("complete", True),
    )


def _dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    tables = ["users", "user_aliases", "groups", "group_aliases", "members", "memberships"]
    with sqlite3.connect(path) as db:
        return {t: sorted(db.execute(f"SELECT * FROM {t}")) for t in tables}


def test_construction_does_no_io_and_reads_create_nothing(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "nested" / "directory.sqlite")
    who = store.resolve("Alice")
    assert (who.found, who.user_id, who.groups) == (False, "alice", frozenset())
    assert store.synced_at() is None
    assert not (tmp_path / "nested").exists()


def test_a_deep_chain_and_a_long_cycle_have_no_recursion_limit(tmp_path: Path) -> None:
    depth = 1000  # deep ∈ g0 ⊂ g1 ⊂ ... ⊂ g999, then also g999 ⊂ g0
    groups: dict[str, tuple[list[str], list[str]]] = {
        f"g{i}": ([], [f"g{i - 1}"] if i else []) for i in range(depth)
    }
    groups["g0"] = (["deep"], [])
    store = DirectoryStore(tmp_path / "directory.sqlite")
    started = time.monotonic()

    chain = store.apply(_snapshot({"deep": []}, groups))
    groups["g0"] = (["deep"], [f"g{depth - 1}"])
    cycle = store.apply(_snapshot({"deep": []}, groups))

    assert time.monotonic() - started < 10
    assert (chain.memberships, cycle.memberships, cycle.added, cycle.removed) == (
        depth,
        depth,
        0,
        0,
    )
    assert store.resolve("deep").groups == {f"g{i}" for i in range(depth)}


def test_a_cycle_terminates_and_both_groups_hold_the_member(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "directory.sqlite")
    store.apply(_snapshot({"u": []}, {"a": ([], ["b"]), "b": (["u"], ["a"]), "c": ([], ["c"])}))
    assert store.resolve("u").groups == {"a", "b"}


def test_resync_reports_added_and_removed_transitive_memberships(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "directory.sqlite")
    first = store.apply(_snapshot({"u": [], "v": []}, {"eng": ([], ["be"]), "be": (["u"], [])}))
    assert first.added_memberships == (("u", "be"), ("u", "eng"))
    again = store.apply(_snapshot({"u": [], "v": []}, {"eng": ([], ["be"]), "be": (["u"], [])}))
    assert (again.added, again.removed) == (0, 0)

    moved = store.apply(_snapshot({"u": [], "v": []}, {"eng": ([], ["be"]), "be": (["v"], [])}))

    assert moved.removed_memberships == (("u", "be"), ("u", "eng"))
    assert moved.added_memberships == (("v", "be"), ("v", "eng"))
    assert store.resolve("u").groups == frozenset()
    assert store.synced_at() is not None


def test_an_alias_two_users_hold_names_neither(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "directory.sqlite")
    summary = store.apply(
        _snapshot(
            {"alice": ["Shared@Example.com", "bob"], "bob": ["shared@example.com"]},
            {"hr": (["alice"], [])},
        )
    )
    assert summary.ambiguous_aliases == ("user:shared@example.com",)
    assert store.resolve("shared@example.com").found is False
    assert store.resolve("bob").user_id == "bob"  # an id names its own user, never another's


def test_ids_are_canonical_and_invalid_aliases_are_dropped() -> None:
    user = DirectoryUser(id="  CORP\\Alice ", aliases=["Alice@Example.com", "bad\u200bname", ""])
    assert user.id == "corp\\alice"
    assert user.aliases == {"corp\\alice", "alice@example.com"}
    with pytest.raises(InvalidPrincipalError):
        DirectoryUser(id="\u200b")


def test_the_same_snapshot_gives_the_same_store(tmp_path: Path) -> None:
    snapshot = _snapshot({"u": ["x"], "v": []}, {"a": (["u", "v"], ["b"]), "b": (["v"], ["a"])})
    DirectoryStore(tmp_path / "one.sqlite").apply(snapshot)
    DirectoryStore(tmp_path / "two.sqlite").apply(snapshot)
    assert _dump(tmp_path / "one.sqlite") == _dump(tmp_path / "two.sqlite")


# -- LDAP helpers and settings -------------------------------------------------------------------


def test_ldap_values_and_dns() -> None:
    sid = bytes([1, 5]) + (5).to_bytes(6, "big")
    sid += b"".join(n.to_bytes(4, "little") for n in (21, 1004336348, 1177238915, 682003330, 1001))
    assert sid_string(sid) == "S-1-5-21-1004336348-1177238915-682003330-1001"
    assert sid_string(b"\x01\x05\x00") is None
    assert decode_value("objectSid", sid) == sid_string(sid)
    guid = bytes.fromhex("5bad8f0fcbd99f46a16570867728950e")
    assert decode_value("objectGUID", guid) == ENTRA_ID.lower()
    assert decode_value("mail", "josé@example.com".encode()) == "josé@example.com"
    assert dn_key("CN=O\\2C Brien, OU=People,DC=Example") == dn_key(
        "cn=o\\, brien,ou=people,dc=example"
    )
    assert dn_key("cn=a,dc=x") != dn_key("cn=b,dc=x")


class _RangedConnection:
    """Answers base searches for ``member;range=N-*`` the way Active Directory does."""

    def __init__(self, members: list[bytes], step: int) -> None:
        self.members, self.step = members, step
        self.response: list[dict[str, Any]] = []
        self.result: dict[str, Any] = {}

    def search(self, dn: str, flt: str, scope: Any, attributes: list[str]) -> None:
        low = int(attributes[0].split("=")[1].split("-")[0])
        high = low + self.step - 1
        last = high >= len(self.members) - 1
        key = f"member;range={low}-{'*' if last else high}"
        self.response = [{"dn": dn, "raw_attributes": {key: self.members[low : high + 1]}}]
        self.result = {"result": 0}


def test_ldap_ranged_member_values_are_read_to_the_end() -> None:
    members = [f"uid=u{i},dc=x".encode() for i in range(7)]
    source = LdapDirectory(DirectorySettings(backend="ldap", ldap_user_base_dns=["dc=x"]))
    raw = {"member;range=0-2": members[:3], "cn": [b"big"]}

    out = source._full_ranges(_RangedConnection(members, 3), "cn=big,dc=x", raw)

    assert out == {"member": members, "cn": [b"big"]}


def test_backends_are_built_from_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no directory configured"):
        build_source(DirectorySettings())
    with pytest.raises(ConfigurationError, match="ldap_user_base_dns"):
        build_source(DirectorySettings(backend="ldap"))
    with pytest.raises(ConfigurationError, match="ldap_password is required"):
        build_source(
            DirectorySettings(backend="ldap", ldap_user_base_dns=["dc=x"], ldap_bind_dn="cn=r")
        )
    with pytest.raises(ConfigurationError, match="exactly one of scim_url and scim_path"):
        build_source(DirectorySettings(backend="scim"))
    assert build_source(DirectorySettings(backend="scim", scim_path=tmp_path)).name.startswith(
        "scim:"
    )


def test_directory_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_DIRECTORY__BACKEND", "ldap")
    monkeypatch.setenv("RAG_DIRECTORY__LDAP_PASSWORD", "s3cret")
    monkeypatch.setenv("RAG_DIRECTORY__LDAP_USER_BASE_DNS", '["ou=people,dc=x"]')
    directory = Settings().directory
    assert directory.backend == "ldap"
    assert directory.group_source == "both"
    assert directory.ldap_user_base_dns == ["ou=people,dc=x"]
    assert "s3cret" not in repr(directory)
