"""The push-manifest connector: complete and delta manifests, tombstones, fail-closed lines,
files and URLs, real-world ids, and the sync contract over a manifest mirrored from a folder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.base import Listing
from connectors.filesystem import FilesystemConnector
from connectors.manifest import HIDDEN, UNAVAILABLE, ManifestConnector, from_options
from connectors.registry import connector_for_target
from rag.config import Settings
from rag.errors import ConfigurationError, ConnectorError, DocumentTooLargeError
from rag.identity import PUBLIC, UserContext
from rag.models import SourceDocument, stable_hash
from rag.pipeline import ingest
from rag.retrieval.core import Retriever
from tests.sync_contract import (
    ACCESS_CORE,
    ALICE,
    SyncContract,
    begin_and_revoke,
    make_corpus,
    policy,
    run,
    uris,
)

BOM = "\ufeff"


def write(path: Path, *lines: dict[str, Any] | str) -> Path:
    """A manifest of these lines (objects as JSON, strings as they are)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines)
    path.write_text(text, "utf-8")
    return path


def doc(ident: str, text: str = "", **extra: Any) -> dict[str, Any]:
    return {"id": ident, "uri": f"kb/{ident}.md", "allow": ["group:staff"], "text": text, **extra}


def listed(listing: Listing) -> dict[str, SourceDocument]:
    return {str(d.metadata["manifest_id"]): d for d in listing.documents}


def hidden(listing: Listing) -> dict[str, str]:
    return {
        str(d.metadata["manifest_id"]): d.acl_error
        for d in listing.documents
        if d.acl_error is not None
    }


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    return tmp_path / "feed" / "kb.jsonl"


def connector(path: Path, **options: Any) -> ManifestConnector:
    return ManifestConnector(path, "kb", **options)


# -- listing --------------------------------------------------------------------------------------
def test_text_entries_list_with_acl_hash_and_metadata(manifest: Path) -> None:
    write(
        manifest,
        {"manifest": {"complete": True, "version": 1}},
        {
            "id": "KB-1",
            "uri": "https://kb.example/1",
            "title": "Leave policy",
            "allow": ["group:Staff", "user:Ann@Example.com"],
            "deny": ["user:Intern"],
            "text": "Employees get 25 days.",
            "modified_at": "2025-01-31T12:00:00Z",
            "classification": " Internal ",
            "metadata": {"team": "hr", "year": 2025, "draft": False},
        },
        {"id": "KB-2", "public": True, "text": "Open to all.", "mime_type": "text/markdown"},
    )
    listing = connector(manifest).list_documents()
    assert listing.complete and listing.errors == () and listing.policy_errors == ()
    one, two = listed(listing)["KB-1"], listed(listing)["KB-2"]
    assert one.id == stable_hash("kb", "KB-1") and one.source == "kb"
    assert (one.uri, one.title, one.mime_type) == (
        "https://kb.example/1",
        "Leave policy",
        "text/plain",
    )
    assert one.content_hash == hashlib.sha256(b"Employees get 25 days.").hexdigest()
    assert one.acl is not None
    assert set(one.acl.allow) == {"group:staff", "user:ann@example.com"}
    assert set(one.acl.deny) == {"user:intern"}
    assert one.classification == "internal"
    assert one.modified_at.isoformat() == "2025-01-31T12:00:00+00:00"
    assert one.metadata == {
        "link": "https://kb.example/1",
        "team": "hr",
        "year": 2025,
        "draft": False,
        "manifest_id": "KB-1",
    }
    assert (two.uri, two.title, two.mime_type) == ("KB-2", "KB-2", "text/markdown")
    assert two.acl is not None and set(two.acl.allow) == {PUBLIC}
    assert "link" not in two.metadata
    assert connector(manifest).read(one) == b"Employees get 25 days."


def test_complete_manifest_replaces_the_set_and_omission_deletes(manifest: Path) -> None:
    write(manifest, doc("a", "alpha"), doc("b", "beta"), doc("c", "gamma"))
    first = connector(manifest).list_documents()
    write(manifest, doc("a", "alpha"), doc("b", "beta, edited"), doc("d", "delta"))
    second = connector(manifest).list_documents()
    assert second.complete
    assert set(listed(second)) == {"a", "b", "d"}  # c omitted: deleted
    assert listed(second)["a"].content_hash == listed(first)["a"].content_hash
    assert listed(second)["b"].content_hash != listed(first)["b"].content_hash


def test_tombstone_line_removes_a_document(manifest: Path) -> None:
    write(manifest, doc("a", "alpha"), {"id": "b", "deleted": True}, doc("c", "gamma"))
    listing = connector(manifest).list_documents()
    assert listing.complete and set(listed(listing)) == {"a", "c"}


def test_delta_manifest_merges_into_the_snapshot(manifest: Path) -> None:
    write(manifest, doc("a", "alpha"), doc("b", "beta"), doc("c", "gamma"))
    base = connector(manifest).list_documents()
    delta = (
        {"manifest": {"complete": False}},
        doc("b", "beta v2"),
        doc("d", "delta"),
        {"id": "c", "deleted": True, "uri": "ignored"},
    )
    write(manifest, *delta)
    merged = connector(manifest).list_documents()
    assert merged.complete, merged.errors
    assert set(listed(merged)) == {"a", "b", "d"}
    a, before = listed(merged)["a"], listed(base)["a"]  # untouched by the delta
    assert (a.id, a.uri, a.content_hash, a.acl) == (
        before.id,
        before.uri,
        before.content_hash,
        before.acl,
    )
    assert listed(merged)["b"].content_hash == hashlib.sha256(b"beta v2").hexdigest()
    again = connector(manifest).list_documents()  # the same delta twice changes nothing
    assert again == merged
    write(manifest, {"manifest": {"complete": False}}, doc("e", "epsilon"))
    later = connector(manifest).list_documents()
    assert set(listed(later)) == {"a", "b", "d", "e"}
    fresh = connector(manifest)  # another process (a DAG batch task) reads what was listed
    assert fresh.read(listed(later)["a"]) == b"alpha"
    assert fresh.read(listed(later)["b"]) == b"beta v2"
    assert (manifest.parent / ".rag" / "connectors" / "kb.jsonl").is_file()


def test_delta_without_a_complete_base_deletes_nothing_and_hides_tombstoned(
    manifest: Path,
) -> None:
    write(
        manifest, {"manifest": {"complete": False}}, doc("a", "alpha"), {"id": "b", "deleted": True}
    )
    listing = connector(manifest).list_documents()
    assert not listing.complete
    assert any("no complete manifest" in e for e in listing.errors)
    assert set(listed(listing)) == {"a", "b"}
    assert "deleted by line 3" in hidden(listing)["b"]
    assert listed(listing)["a"].acl is not None


def test_state_dir_option_and_read_of_a_document_the_snapshot_lost(
    manifest: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    write(manifest, doc("a", "alpha"), doc("b", "beta"))
    first = connector(manifest, state_dir=state).list_documents()
    assert (state / "kb.jsonl").is_file()
    write(manifest, doc("a", "alpha v2"))
    connector(manifest, state_dir=state).list_documents()
    reader = connector(manifest, state_dir=state)
    with pytest.raises(ConnectorError, match="not in the manifest's snapshot"):
        reader.read(listed(first)["b"])
    with pytest.raises(ConnectorError, match="changed since it was listed"):
        reader.read(listed(first)["a"])  # listed as "alpha": never read as another version


# -- fail closed ----------------------------------------------------------------------------------
def test_bad_lines_fail_closed(manifest: Path) -> None:
    write(
        manifest,
        doc("ok", "fine", allow=["group:staff", "user:\u0000", "nobody"]),
        doc("bad-deny", "x", deny=["user:\u0000"]),
        '{"id": "broken-json", "text": "x", ',
        doc("typo", "x", denny=["user:mallory"]),
        doc("two-contents", "x", path="x.txt"),
        '{"id": "dup-key", "text": "x", "deny": ["user:m"], "deny": []}',
        '{"id": "nan", "text": "x", "metadata": {"n": NaN}, "allow": ["public"]}',
        doc("nested", "x", metadata={"a": {"b": 1}}),
        doc("when", "x", modified_at="last tuesday"),
        '{"id": "lone", "text": "a \\ud800 b", "allow": ["public"]}',
        '{"id": "pair", "text": "a \\ud83d\\ude00 b", "allow": ["public"]}',
    )
    listing = connector(manifest).list_documents()
    assert listing.complete  # every bad line names its document
    ok = listed(listing)["ok"]
    assert ok.acl is not None and set(ok.acl.allow) == {"group:staff"}
    dropped = [p for p in listing.policy_errors if "allow entry dropped" in p]
    assert len(dropped) == 2 and all(p.startswith("kb.jsonl: line 1: ") for p in dropped)
    errors = hidden(listing)
    assert set(errors) == {
        "bad-deny",
        "broken-json",
        "typo",
        "two-contents",
        "dup-key",
        "nan",
        "nested",
        "when",
        "lone",
    }
    assert "line 2: deny entry is invalid" in errors["bad-deny"]
    assert "U+0000" in errors["bad-deny"]
    assert "line 3: not valid JSON" in errors["broken-json"]
    assert "line 4: key denny" in errors["typo"]
    assert "exactly one of text, path or url" in errors["two-contents"]
    assert "'deny' is given twice" in errors["dup-key"]
    assert "NaN is not a JSON number" in errors["nan"]
    assert "line 9: key modified_at" in errors["when"]
    assert "line 10: holds an unpaired surrogate" in errors["lone"]
    assert listed(listing)["pair"].content_hash == hashlib.sha256("a 😀 b".encode()).hexdigest()
    for problem in errors.values():
        assert problem.startswith("manifest error: kb.jsonl: line ")
    assert all(listed(listing)[i].acl is None for i in errors)
    assert all(listed(listing)[i].content_hash.startswith(HIDDEN) for i in errors)
    assert len([p for p in listing.policy_errors if "allow entry dropped" not in p]) == 9


def test_a_line_that_names_no_id_makes_the_listing_incomplete(manifest: Path) -> None:
    write(manifest, doc("a", "alpha"), doc("b", "beta"), doc("c", "gamma"))
    connector(manifest).list_documents()
    for line in (
        "this is not JSON",
        '{"uri": "kb/x.md", "text": "no id"}',
        '{"id": "", "text": "empty id"}',
        '{"id": 42, "text": "not a string"}',
        '["id", "a list"]',
        '{"id": "x", "id": "y", "text": "two ids"',
        '{"id": "x \\udc00", "text": "an id that is no Unicode text"}',
        b"\xff\xfe not utf-8",
    ):
        write(manifest, doc("a", "alpha v2"))
        with manifest.open("ab") as out:
            out.write((line if isinstance(line, bytes) else line.encode()) + b"\n")
        listing = connector(manifest).list_documents()
        assert not listing.complete, line
        assert any("line 2" in e for e in listing.errors), (line, listing.errors)
        # nothing deleted by omission: b and c (from the last good manifest) are still listed
        assert set(listed(listing)) == {"a", "b", "c"}, line
        assert listed(listing)["a"].content_hash == hashlib.sha256(b"alpha v2").hexdigest()


def test_incomplete_manifest_tombstones_hide_rather_than_delete(manifest: Path) -> None:
    write(manifest, doc("a", "alpha"), doc("b", "beta"))
    connector(manifest).list_documents()
    write(manifest, {"id": "b", "deleted": True}, "garbage")
    listing = connector(manifest).list_documents()
    assert not listing.complete
    assert listed(listing)["b"].uri == "kb/b.md"  # named as it was listed
    assert "deleted by line 1" in hidden(listing)["b"]
    assert listed(listing)["a"].acl is not None


def test_header_must_be_first_and_valid(manifest: Path) -> None:
    write(manifest, doc("a", "alpha"), doc("b", "beta"))
    connector(manifest).list_documents()
    write(manifest, doc("a", "alpha"), {"manifest": {"complete": True}})
    late = connector(manifest).list_documents()
    assert not late.complete and "must be the first line" in late.errors[0]
    assert set(listed(late)) == {"a", "b"}  # merged, as if a delta
    write(manifest, {"manifest": {"complete": "yes"}}, doc("a", "alpha"))
    bad = connector(manifest).list_documents()
    assert not bad.complete and "invalid manifest header" in bad.errors[0]
    assert set(listed(bad)) == {"a", "b"}
    write(manifest, {"manifest": {"complete": True, "version": 2}}, doc("a", "alpha"))
    assert not connector(manifest).list_documents().complete


def test_duplicate_ids_hide_the_document_naming_every_line(manifest: Path) -> None:
    write(
        manifest,
        doc("a", "alpha"),
        doc("b", "one"),
        doc("b", "two"),
        doc("c", "gamma"),
        {"id": "c", "deleted": True},
        {"id": "d", "deleted": True},
        {"id": "d", "deleted": True},
    )
    listing = connector(manifest).list_documents()
    assert listing.complete
    errors = hidden(listing)
    assert set(errors) == {"b", "c"}
    assert "'b' is on lines 2, 3" in errors["b"] and "no line wins" in errors["b"]
    assert "'c' is on lines 4, 5" in errors["c"]
    assert listed(listing)["b"].uri == "kb/b.md"
    assert "d" not in listed(listing)  # tombstoned twice: deleted
    assert any("lines 2, 3" in p for p in listing.policy_errors)


def test_an_unreadable_snapshot_makes_a_delta_incomplete(manifest: Path) -> None:
    write(manifest, doc("a", "alpha"))
    c = connector(manifest)
    c.list_documents()
    c.snapshot_path.write_text("{not a snapshot", "utf-8")
    write(manifest, {"manifest": {"complete": False}}, doc("b", "beta"))
    listing = connector(manifest).list_documents()
    assert not listing.complete
    assert any("is unreadable" in e for e in listing.errors)
    assert set(listed(listing)) == {"b"}
    assert c.snapshot_path.with_suffix(".jsonl.corrupt").is_file()
    write(manifest, doc("a", "alpha"), doc("b", "beta"))  # a complete manifest heals it
    assert connector(manifest).list_documents().complete


def test_limits(manifest: Path) -> None:
    big = "x" * 200
    huge = "y" * (1024 * 1024 + 1000)  # a line longer than 6 x 100 bytes + 1 MiB
    write(manifest, doc("big", big), doc("huge", huge), doc("ok", "fine"))
    small = connector(manifest, max_entry_bytes=100)
    listing = small.list_documents()
    assert listing.complete and set(listed(listing)) == {"big", "huge", "ok"}
    assert "line 2: longer than" in hidden(listing)["huge"]
    with pytest.raises(DocumentTooLargeError):
        small.read(listed(listing)["big"])
    assert small.read(listed(listing)["ok"]) == b"fine"
    capped = connector(manifest, max_manifest_bytes=len(json.dumps(doc("big", big))) + 10)
    partial = capped.list_documents()
    assert not partial.complete and "past max_manifest_bytes" in partial.errors[0]


# -- files and URLs -------------------------------------------------------------------------------
def test_path_entries(manifest: Path, tmp_path: Path) -> None:
    files = manifest.parent / "files"
    files.mkdir(parents=True)
    (files / "a.txt").write_text("file a", "utf-8")
    (files / "b.txt").write_text("file b", "utf-8")
    outside = tmp_path / "secret.txt"
    outside.write_text("not yours", "utf-8")
    (files / "link.txt").symlink_to(outside)
    declared = hashlib.sha256(b"file b").hexdigest()
    write(
        manifest,
        {"id": "a", "allow": ["group:x"], "path": "files/a.txt"},
        {
            "id": "b",
            "allow": ["group:x"],
            "path": str(files / "b.txt"),
            "content_hash": f"sha256:{declared.upper()}",
        },
        {"id": "c", "allow": ["group:x"], "url": (files / "a.txt").as_uri()},
        {"id": "out", "allow": ["group:x"], "path": str(outside)},
        {"id": "link", "allow": ["group:x"], "path": "files/link.txt"},
        {"id": "gone", "allow": ["group:x"], "path": "files/missing.txt"},
    )
    c = connector(manifest)
    docs = listed(c.list_documents())
    assert docs["a"].content_hash == hashlib.sha256(b"file a").hexdigest()
    assert (docs["a"].mime_type, docs["a"].size_bytes) == ("text/plain", 6)
    assert docs["b"].content_hash == declared
    assert docs["c"].content_hash == docs["a"].content_hash
    assert c.read(docs["a"]) == b"file a" and c.read(docs["c"]) == b"file a"
    assert c.read(docs["b"]) == b"file b"
    for name in ("out", "link", "gone"):
        assert docs[name].content_hash.startswith(UNAVAILABLE), name
        assert docs[name].acl is not None  # listed: its ACL still applies to what is indexed
    with pytest.raises(ConnectorError, match="outside the folders"):
        c.read(docs["out"])
    with pytest.raises(ConnectorError, match="outside the folders"):
        c.read(docs["link"])
    with pytest.raises(ConnectorError, match="cannot read"):
        c.read(docs["gone"])
    (files / "b.txt").write_text("file b, edited", "utf-8")
    with pytest.raises(ConnectorError, match="content_hash"):
        c.read(docs["b"])  # the manifest's hash, not the file's new bytes
    (files / "a.txt").write_text("file a, edited", "utf-8")
    with pytest.raises(ConnectorError, match="changed since it was listed"):
        c.read(docs["a"])
    allowed = connector(manifest, path_roots=[tmp_path])
    assert allowed.read(listed(allowed.list_documents())["out"]) == b"not yours"


class Server:
    """An httpx transport serving a few pages, recording the requests."""

    def __init__(self) -> None:
        self.pages: dict[str, tuple[bytes, dict[str, str]]] = {}
        self.requests: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(str(request.url))
        body, headers = self.pages.get(str(request.url), (b"", {}))
        if "location" in headers:
            return httpx.Response(302, headers=headers)
        if not body:
            return httpx.Response(404)
        return httpx.Response(200, content=body, headers=headers)


def test_url_entries(manifest: Path) -> None:
    server = Server()
    server.pages = {
        "https://kb.example/p/1.html": (b"<p>one</p>", {}),
        "https://kb.example/p/2.html": (b"<p>two</p>", {"etag": 'W/"v2"'}),
        "https://kb.example/p/3": (b"", {"location": "https://evil.example/x"}),
        "https://kb.example/p/4": (b"", {"location": "/p/1.html"}),
    }
    write(
        manifest,
        {"id": "1", "allow": ["group:x"], "url": "https://kb.example/p/1.html"},
        {"id": "2", "allow": ["group:x"], "url": "https://kb.example/p/2.html", "etag": '"v2"'},
        {"id": "3", "allow": ["group:x"], "url": "https://kb.example/p/3"},
        {"id": "4", "allow": ["group:x"], "url": "https://kb.example/p/4"},
        {"id": "5", "allow": ["group:x"], "url": "https://kb.example.evil/p/1.html"},
        {"id": "6", "allow": ["group:x"], "url": "https://kb.example/p/missing"},
    )
    refused = connector(manifest, transport=httpx.MockTransport(server))
    assert all(d.content_hash.startswith(UNAVAILABLE) for d in refused.list_documents().documents)
    assert server.requests == []  # no url_prefixes: nothing is fetched
    c = connector(
        manifest,
        url_prefixes=["https://kb.example/p/"],
        transport=httpx.MockTransport(server),
    )
    docs = listed(c.list_documents())
    assert docs["1"].content_hash == hashlib.sha256(b"<p>one</p>").hexdigest()
    assert docs["1"].mime_type == "text/html"
    assert docs["2"].content_hash.startswith("etag:")
    assert "https://kb.example/p/2.html" not in server.requests  # an etag: not fetched to list
    assert docs["4"].content_hash == docs["1"].content_hash  # a redirect within the prefix
    for name in ("3", "5", "6"):
        assert docs[name].content_hash.startswith(UNAVAILABLE), name
    assert "https://evil.example/x" not in server.requests
    assert c.read(docs["1"]) == b"<p>one</p>"
    assert c.read(docs["2"]) == b"<p>two</p>"
    with pytest.raises(ConnectorError, match="url_prefixes"):
        c.read(docs["5"])
    server.pages["https://kb.example/p/2.html"] = (b"<p>2b</p>", {"etag": '"v3"'})
    with pytest.raises(ConnectorError, match="ETag"):
        c.read(docs["2"])
    server.pages["https://kb.example/p/1.html"] = (b"x" * 50, {})
    small = connector(
        manifest,
        url_prefixes=["https://kb.example/"],
        max_entry_bytes=20,
        transport=httpx.MockTransport(server),
    )
    with pytest.raises(DocumentTooLargeError):
        small.read(docs["1"])


# -- real-world ids ---------------------------------------------------------------------------
HOSTILE_IDS = [
    "O'Brien's \"notes\"",
    "CORP\\alice\\plan.md",
    "CN=Finance Team,OU=Groups,DC=corp,DC=example",
    "日本/報告",
    "line\nbreak",
    "  padded  ",
    "a'); DROP TABLE chunks; --",
]


def test_hostile_real_world_ids(manifest: Path) -> None:
    write(
        manifest,
        *(
            {
                "id": ident,
                "text": f"text {n}",
                "allow": [
                    "user:O'Brien@Example.com",
                    "group:CORP\\Domain Users",
                    "group:CN=Finance Team,OU=Groups,DC=corp,DC=example",
                    "group:日本",
                ],
                "deny": ["user:MALLORY@corp.example"],
            }
            for n, ident in enumerate(HOSTILE_IDS)
        ),
    )
    c = connector(manifest)
    listing = c.list_documents()
    assert listing.complete and listing.policy_errors == ()
    docs = listed(listing)
    assert set(docs) == set(HOSTILE_IDS)  # exact: nothing normalized, stripped or refused
    for n, ident in enumerate(HOSTILE_IDS):
        d = docs[ident]
        assert d.id == stable_hash("kb", ident) and d.uri == ident
        assert d.acl is not None
        assert set(d.acl.allow) == {
            "user:o'brien@example.com",
            "group:corp\\domain users",
            "group:cn=finance team,ou=groups,dc=corp,dc=example",
            "group:日本",
        }
        assert set(d.acl.deny) == {"user:mallory@corp.example"}
        assert c.read(d) == f"text {n}".encode()
    assert listed(connector(manifest).list_documents()) == docs  # stable


def test_case_sensitive_ids(manifest: Path) -> None:
    write(manifest, doc("a", "alpha", allow=["user:Bob"], deny=["user:Eve"]))
    (d,) = connector(manifest, case_sensitive_ids=True).list_documents().documents
    assert d.acl is not None
    assert set(d.acl.allow) == {"user.cs:Bob"}
    assert set(d.acl.deny) == {"user.cs:Eve", "user:eve"}


# -- options --------------------------------------------------------------------------------------
def test_from_options_and_the_cli_target(tmp_path: Path) -> None:
    write(tmp_path / "feeds" / "kb.jsonl", doc("a", "alpha"))
    c = from_options("kb", {"path": "feeds/kb.jsonl", "state_dir": "st"}, tmp_path)
    assert c.snapshot_path == tmp_path / "st" / "kb.jsonl"
    assert set(listed(c.list_documents())) == {"a"}
    for bad in (
        {},
        {"path": "x.jsonl", "root": "."},
        {"path": "x.jsonl", "url_prefixes": ["ftp://x/"]},
        {"path": "x.jsonl", "url_prefixes": "https://x/"},
        {"path": "x.jsonl", "max_entry_bytes": 0},
        {"path": "x.jsonl", "max_entry_bytes": "many"},
    ):
        with pytest.raises(ConfigurationError):
            from_options("kb", bad, tmp_path)
    with pytest.raises(ConfigurationError):
        ManifestConnector(tmp_path / "x.jsonl", "../escape")
    target = connector_for_target(str(tmp_path / "feeds" / "kb.jsonl"), None)
    assert isinstance(target, ManifestConnector) and target.name == "kb"


def test_no_io_at_construction(tmp_path: Path) -> None:
    ManifestConnector(tmp_path / "nowhere" / "kb.jsonl", "kb")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConnectorError, match="cannot read the manifest"):
        ManifestConnector(tmp_path / "nowhere" / "kb.jsonl", "kb").list_documents()


# -- through the pipeline ---------------------------------------------------------------------
STAFF = UserContext.of("ann", ["staff"])


def found(settings: Settings, user: UserContext, query: str = "policy days") -> set[str]:
    hits = Retriever.from_settings(settings).retrieve(query, user, k=20)
    return {h.chunk.citation.uri for h in hits}


def test_pipeline_add_change_unchanged_delete_and_acl_only(
    settings: Settings, manifest: Path
) -> None:
    write(
        manifest,
        doc("a", "Leave policy: 25 days."),
        doc("b", "Travel policy: book early."),
        doc("c", "Expense policy: keep receipts."),
    )
    first = ingest(connector(manifest), settings)
    assert (first.new, first.listing_complete) == (3, True)
    write(
        manifest,
        doc("a", "Leave policy: 25 days."),
        doc("b", "Travel policy: book early, fly economy."),
        doc("d", "Remote policy: two days a week."),
    )
    second = ingest(connector(manifest), settings)
    assert (second.unchanged, second.changed, second.new, second.tombstoned) == (1, 1, 1, 1)
    assert found(settings, STAFF) == {"kb/a.md", "kb/b.md", "kb/d.md"}
    write(
        manifest,
        doc("a", "Leave policy: 25 days.", allow=["group:hr"]),
        doc("b", "Travel policy: book early, fly economy."),
        doc("d", "Remote policy: two days a week."),
    )
    acl_only = ingest(connector(manifest), settings)
    assert (acl_only.acl_only, acl_only.embedding_calls, acl_only.changed) == (1, 0, 0)
    assert found(settings, STAFF) == {"kb/b.md", "kb/d.md"}
    assert "kb/a.md" in found(settings, UserContext.of("hana", ["hr"]))


def test_pipeline_delta_and_bad_lines(settings: Settings, manifest: Path) -> None:
    write(manifest, doc("a", "Leave policy: 25 days."), doc("b", "Travel policy: book early."))
    ingest(connector(manifest), settings)
    write(
        manifest,
        {"manifest": {"complete": False}},
        doc("c", "Expense policy: keep receipts."),
        doc("b", "Travel policy", deny=["user:\u0000"]),
    )
    delta = ingest(connector(manifest), settings)
    assert delta.listing_complete and (delta.new, delta.unchanged, delta.tombstoned) == (1, 1, 0)
    assert found(settings, STAFF) == {"kb/a.md", "kb/c.md"}  # b hidden by its broken line
    assert [r.reason for r in delta.quarantined] == ["policy_error"]
    assert "kb.jsonl: line 3: deny entry is invalid" in delta.quarantined[0].message
    write(manifest, {"manifest": {"complete": False}}, {"id": "a", "deleted": True})
    gone = ingest(connector(manifest), settings)
    assert gone.tombstoned == 1 and found(settings, STAFF) == {"kb/c.md"}


def test_pipeline_entry_without_an_extension(settings: Settings, manifest: Path) -> None:
    write(manifest, {"id": "KB-1", "allow": ["group:staff"], "text": "Leave policy: 25 days."})
    summary = ingest(connector(manifest), settings)
    assert summary.quarantined == []
    assert found(settings, STAFF) == {"KB-1"}


# -- the sync contract, over a manifest mirrored from the folder ---------------------------------
class FolderManifest:
    """A manifest connector whose complete manifest is regenerated from the folder ``root`` at
    each listing: each file's ACL as the folder's policies resolve it, its content as text or
    as a path (alternately); a file whose policy is broken gets a line with an invalid deny
    entry, which the manifest connector fails closed on."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._manifest = root.parent / "manifests" / "src.jsonl"
        self._inner = ManifestConnector(self._manifest, "src", path_roots=[root])

    @property
    def name(self) -> str:
        return self._inner.name

    def list_documents(self) -> Listing:
        lines: list[dict[str, Any]] = []
        folder = FilesystemConnector(self._root, "src").list_documents()
        for n, d in enumerate(folder.documents):
            line: dict[str, Any] = {"id": d.uri, "uri": d.uri, "title": d.title}
            if d.acl is not None:
                line |= {"allow": sorted(d.acl.allow), "deny": sorted(d.acl.deny)}
            if d.acl_error is not None:
                line["deny"] = ["user:\u0000"]
            if d.classification:
                line["classification"] = d.classification
            if n % 2:
                line["path"] = str(self._root / d.uri)
            else:
                line["text"] = (self._root / d.uri).read_bytes().decode("utf-8")
            lines.append(line)
        write(self._manifest, *lines)
        return self._inner.list_documents()

    def read(self, document: SourceDocument) -> bytes:
        return self._inner.read(document)


@pytest.fixture
def sync_settings(settings: Settings) -> Settings:
    return settings


@pytest.mark.slow
class TestManifestSync(SyncContract):
    def connector(self, root: Path) -> FolderManifest:
        return FolderManifest(root)

    def test_malformed_policy_hides_what_it_governs_and_names_it(
        self, sync_settings: Settings, tmp_path: Path
    ) -> None:
        """The manifest's form of it: a line with an invalid deny entry hides its document and
        names the manifest's line (the folder's policy file is not the source here)."""
        root = make_corpus(tmp_path / "src", docs=3)
        run(root, sync_settings)
        policy(root, 'allow = ["group:eng"]\ndeny = ["user:\\u0000"]\n')
        killed = begin_and_revoke(sync_settings, root)
        assert uris(sync_settings, ALICE) == set()
        assert killed.summary.listing_complete
        problems = killed.summary.policy_errors
        assert len(problems) == 3
        assert all("src.jsonl: line" in p and "U+0000" in p for p in problems)
        summary = run(root, sync_settings)
        assert {r.reason for r in summary.quarantined} == {"policy_error"}
        assert all("src.jsonl: line" in r.message for r in summary.quarantined)
        assert uris(sync_settings, ALICE) == set()
        policy(root, 'allow = ["group:eng"]\n')
        run(root, sync_settings)
        assert len(uris(sync_settings, ALICE)) == 3

    @pytest.mark.skip(
        reason="about .rag-acl.toml per-file overrides, which a manifest does not have; its "
        "fail-closed counterpart is test_bad_lines_fail_closed"
    )
    def test_override_that_matches_no_file_fails_closed(self) -> None:
        pass


@pytest.mark.integration
@pytest.mark.extended
class TestManifestSyncOnOpenSearch(TestManifestSync):
    """The same contract over a push manifest with the OpenSearch store."""

    only = ACCESS_CORE

    @pytest.fixture
    def sync_settings(self, opensearch_sync_settings: Settings) -> Settings:
        return opensearch_sync_settings
