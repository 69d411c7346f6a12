"""The SharePoint connector against the loopback Graph: delta snapshots, permissions, faults,
and the sync contract (every behaviour the folder connector shows, through Graph)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.base import Listing
from connectors.filesystem import FilesystemConnector
from connectors.registry import build_connector
from connectors.sharepoint import SharePointConnector, from_options
from connectors.sharepoint_acl import PrincipalMap
from connectors.sharepoint_snapshot import DriveSnapshot
from rag.config import Settings
from rag.errors import ConfigurationError
from rag.identity import PUBLIC, UserContext
from rag.models import Acl, SourceDocument, stable_hash
from rag.pipeline import ingest
from rag.testing.graph import (
    GraphServer,
    group_grant,
    link_grant,
    quick_xor_hash,
    site_group_grant,
    user_grant,
)
from tests import sync_contract
from tests.sync_contract import (
    ACCESS_CORE,
    ALICE,
    BOB,
    SyncContract,
    make_corpus,
    policy,
    run,
    uris,
)

GOLDEN = Path(__file__).parents[1] / "golden" / "graph"
NOW = datetime(2026, 1, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def graph() -> Iterator[GraphServer]:
    with GraphServer() as server:
        yield server


@pytest.fixture
def server(graph: GraphServer) -> GraphServer:
    graph.reset()
    return graph


def options(server: GraphServer, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "tenant_id": server.tenant,
        "client_id": server.client_id,
        "client_secret": server.client_secret,
        "authority_url": server.base_url,
        "graph_url": server.base_url,
        "ca_bundle": str(server.ca_bundle),
        "state_dir": str(tmp_path / "state"),
        "max_retry_after_seconds": 1,
    }
    return {**base, **extra}


def connector(server: GraphServer, tmp_path: Path, **extra: Any) -> SharePointConnector:
    return from_options("sp", options(server, tmp_path, **extra), tmp_path)


def library(server: GraphServer, files: int = 4) -> str:
    """A library whose root grants the site's owners and members; eng/ inherits it."""
    drive = server.add_drive(
        root_permissions=[
            site_group_grant("3", "Engineering Owners", ["owner"]),
            group_grant("5d8f1c2e-eng", "Engineering"),
        ]
    )
    for i in range(files):
        server.put(drive.id, f"eng/note-{i:03d}.md", f"# Note {i}\n\nDesign note {i}.\n".encode())
    return drive.id


def by_uri(listing: Listing) -> dict[str, SourceDocument]:
    return {d.uri: d for d in listing.documents}


def site_key(server: GraphServer, drive_id: str) -> str:
    return server.drives[drive_id].site_id.split(",")[1]


# -- options --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"client_secret": None}, "exactly one of client_secret"),
        ({"client_secret_env": "X"}, "exactly one of client_secret"),
        ({"drives": []}, "at least one site"),
        ({"anonymous_links": "everyone"}, "anonymous_links"),
        ({"organization_links": "grp:all"}, "organization_links"),
        ({"principal_property": "sid"}, "principal_property"),
        ({"page_size": 0}, "page_size"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_options_are_validated(
    server: GraphServer, tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    given = {
        k: v
        for k, v in {**options(server, tmp_path, drives=["d"]), **change}.items()
        if v is not None
    }
    with pytest.raises(ConfigurationError, match=message):
        build_connector("sharepoint", "sp", given, tmp_path)


def test_construction_does_no_io_and_resolves_paths(server: GraphServer, tmp_path: Path) -> None:
    given = options(
        server,
        tmp_path,
        drives=["d"],
        graph_url="https://127.0.0.1:9",
        authority_url="https://127.0.0.1:9",
        ca_bundle="certs/ca.pem",
    )
    del given["state_dir"]
    made = build_connector("sharepoint", "sp", given, tmp_path)
    assert isinstance(made, SharePointConnector)
    assert made.state_dir == tmp_path / ".rag" / "connectors" / "sp"
    assert server.requests == []
    env = options(
        server,
        tmp_path,
        drives=["d"],
        client_secret=None,
        client_secret_env="RAG_TEST_SP_SECRET_UNSET",
    )
    env.pop("client_secret")
    lazy = from_options("sp", env, tmp_path)  # a missing variable is reported when listing
    with pytest.raises(ConfigurationError, match="RAG_TEST_SP_SECRET_UNSET"):
        lazy.list_documents()


# -- listing --------------------------------------------------------------------------------------


def test_first_listing_maps_items_hashes_links_and_inherited_permissions(
    server: GraphServer, tmp_path: Path
) -> None:
    drive = library(server)
    server.put(
        drive,
        "eng/specs/Design Review.pdf",
        b"%PDF-1.7 not really",
        [user_grant("Megan@Contoso.com", roles=["write"])],
    )
    sp = connector(server, tmp_path, drives=[drive])
    listing = sp.list_documents()
    assert (listing.complete, listing.errors, listing.policy_errors) == (True, (), ())
    docs = by_uri(listing)
    assert sorted(docs) == [
        *(f"eng/note-{i:03d}.md" for i in range(4)),
        "eng/specs/Design Review.pdf",
    ]
    note = docs["eng/note-001.md"]
    body = b"# Note 1\n\nDesign note 1.\n"
    assert note.content_hash == f"quickXorHash:{quick_xor_hash(body)}"
    assert (note.title, note.mime_type, note.size_bytes) == ("note-001", "text/markdown", len(body))
    assert note.id == stable_hash("sp", "eng/note-001.md")
    site = server.sites[server.drives[drive].site_id]
    assert note.metadata["link"] == f"https://{site.hostname}/{site.path}/Documents/eng/note-001.md"
    site_group = f"group:sp-site:{site_key(server, drive)}:3"
    assert note.acl == Acl(allow=frozenset({site_group, "group:5d8f1c2e-eng"}))
    pdf = docs["eng/specs/Design Review.pdf"]
    assert pdf.acl == Acl(allow=frozenset({"user:megan@contoso.com"}))  # unique: not inherited
    assert (pdf.title, pdf.mime_type) == ("Design Review", "application/pdf")
    assert sp.read(pdf) == b"%PDF-1.7 not really"
    assert server.token_requests == 1
    assert server.count(r"\$batch", "POST") == 1  # five files' permissions in one batch


def test_delta_applies_changes_deletions_and_folder_renames(
    server: GraphServer, tmp_path: Path
) -> None:
    drive = library(server, files=6)
    first = connector(server, tmp_path, drives=[drive], page_size=2).list_documents()
    assert len(first.documents) == 6
    server.delete(drive, "eng/note-002.md")
    server.put(drive, "eng/note-003.md", b"# Note 3\n\nRewritten.\n")
    server.put(drive, "eng/new.md", b"# New\n")
    server.reset()
    second = connector(server, tmp_path, drives=[drive], page_size=2).list_documents()
    assert second.complete
    docs = by_uri(second)
    assert "eng/note-002.md" not in docs and "eng/new.md" in docs
    assert docs["eng/note-003.md"].content_hash != by_uri(first)["eng/note-003.md"].content_hash
    assert docs["eng/note-004.md"].content_hash == by_uri(first)["eng/note-004.md"].content_hash
    assert server.count(r"/root/delta") == server.count(r"/root/delta\?.*token=") == 2
    server.rename(drive, "eng", "engineering")  # delta reports the folder alone
    third = connector(server, tmp_path, drives=[drive]).list_documents()
    assert sorted(by_uri(third)) == sorted(u.replace("eng/", "engineering/") for u in docs)
    server.delete(drive, "engineering")  # a deleted folder takes its files with it
    assert connector(server, tmp_path, drives=[drive]).list_documents().documents == ()


def test_a_permission_change_alone_is_an_acl_only_update(
    server: GraphServer, tmp_path: Path, settings: Settings
) -> None:
    drive = library(server, files=2)
    first = ingest(connector(server, tmp_path, drives=[drive]), settings)
    assert first.new == 2
    server.set_permissions(drive, "eng/note-001.md", [user_grant("bob@contoso.com")])
    listing = connector(server, tmp_path, drives=[drive]).list_documents()
    note = by_uri(listing)["eng/note-001.md"]
    assert note.acl == Acl(allow=frozenset({"user:bob@contoso.com"}))
    summary = ingest(connector(server, tmp_path, drives=[drive]), settings)
    assert (summary.acl_only, summary.changed, summary.embedding_calls) == (1, 0, 0)


def test_throttled_delta_and_permission_requests_still_list_completely(
    server: GraphServer, tmp_path: Path
) -> None:
    drive = library(server, files=3)
    server.throttle(r"/root/delta", times=2, retry_after="0")
    server.throttle(r"/items/[^/]+/permissions", times=2, retry_after="0")
    listing = connector(server, tmp_path, drives=[drive]).list_documents()
    assert listing.complete and len(listing.documents) == 3
    assert all(d.acl is not None and not d.acl.is_empty for d in listing.documents)
    assert server.count(r"/root/delta") == 3


def test_gone_delta_link_resyncs_the_whole_drive(server: GraphServer, tmp_path: Path) -> None:
    drive = library(server, files=3)
    connector(server, tmp_path, drives=[drive]).list_documents()
    server.delete(drive, "eng/note-000.md")
    server.expire_delta_tokens(drive)
    server.reset()
    listing = connector(server, tmp_path, drives=[drive]).list_documents()
    assert listing.complete
    assert sorted(by_uri(listing)) == ["eng/note-001.md", "eng/note-002.md"]
    assert server.count(r"/root/delta\?.*token=") == 1  # the 410
    assert server.count(r"/root/delta") == 2  # then the fresh enumeration from Location


def test_a_failure_mid_delta_keeps_the_old_snapshot_and_deletes_nothing(
    server: GraphServer, tmp_path: Path, settings: Settings
) -> None:
    drive = library(server, files=4)
    first = ingest(connector(server, tmp_path, drives=[drive], page_size=1), settings)
    assert first.new == 4
    snapshot = next((tmp_path / "state").glob("drive-*.json"))
    before = snapshot.read_bytes()
    for i in range(3):
        server.delete(drive, f"eng/note-{i:03d}.md")
    server.fail(r"/root/delta", times=1, status=500, after=1)  # the second page fails
    broken = connector(server, tmp_path, drives=[drive], page_size=1, max_retries=0)
    listing = broken.list_documents()
    assert not listing.complete
    assert "delta query failed (the last complete snapshot is listed)" in listing.errors[0]
    assert len(listing.documents) == 4  # the old snapshot, its ACLs read again
    assert snapshot.read_bytes() == before
    server.fail(r"/root/delta", times=1, status=500, after=1)  # and again, as the run lists
    summary = ingest(broken, settings)
    assert (summary.listing_complete, summary.tombstoned) == (False, 0)
    healed = connector(server, tmp_path, drives=[drive], page_size=1).list_documents()
    assert healed.complete and [d.uri for d in healed.documents] == ["eng/note-003.md"]
    assert snapshot.read_bytes() != before


def test_permissions_that_cannot_be_read_hide_only_their_file(
    server: GraphServer, tmp_path: Path
) -> None:
    drive = library(server, files=3)
    server.fail_permissions(drive, "eng/note-001.md", 403)
    listing = connector(server, tmp_path, drives=[drive]).list_documents()
    assert listing.complete
    docs = by_uri(listing)
    hidden = docs["eng/note-001.md"]
    assert hidden.acl is None and hidden.acl_error is not None and "403" in hidden.acl_error
    assert all(docs[u].acl is not None for u in ("eng/note-000.md", "eng/note-002.md"))
    assert any("eng/note-001.md" in p and "(1 files)" in p for p in listing.policy_errors)
    server.fail(r"\$batch", times=1, status=500)  # the whole batch: every file hidden
    again = connector(server, tmp_path, drives=[drive], max_retries=0).list_documents()
    assert again.complete and all(d.acl is None and d.acl_error for d in again.documents)


def test_sites_and_several_drives_prefix_their_uris(server: GraphServer, tmp_path: Path) -> None:
    site = server.add_site("sites/eng", "Engineering")
    docs_lib = server.add_drive(name="Documents", site=site, root_permissions=[group_grant("g")])
    specs = server.add_drive(name="Specs", site=site, root_permissions=[group_grant("g")])
    server.add_drive(name="Site Assets", site=site, root_permissions=[group_grant("g")])
    server.put(docs_lib.id, "a.md", b"a")
    server.put(specs.id, "b/c.md", b"c", [site_group_grant("4", "Engineering Members")])
    onedrive = library(server, files=1)
    sp = connector(
        server,
        tmp_path,
        drives=[{"id": onedrive, "name": "megan"}],
        sites=[{"site": "contoso.sharepoint.com:/sites/eng", "libraries": ["Documents", "Specs"]}],
    )
    listing = sp.list_documents()
    assert listing.complete
    docs = by_uri(listing)
    assert sorted(docs) == ["Documents/a.md", "Specs/b/c.md", "megan/eng/note-000.md"]
    assert docs["Specs/b/c.md"].acl == Acl(
        allow=frozenset({f"group:sp-site:{site.id.split(',')[1]}:4"})
    )
    assert sp.read(docs["Specs/b/c.md"]) == b"c"
    twice = connector(server, tmp_path, drives=[onedrive, {"id": onedrive}])
    with pytest.raises(ConfigurationError, match="drives configured twice"):
        twice.list_documents()
    clash = connector(
        server, tmp_path, drives=[{"id": onedrive, "name": "x"}, {"id": specs.id, "name": "x"}]
    )
    with pytest.raises(ConfigurationError, match="several drives are named"):
        clash.list_documents()


def test_an_unknown_site_makes_the_listing_incomplete(server: GraphServer, tmp_path: Path) -> None:
    drive = library(server, files=1)
    sp = connector(server, tmp_path, drives=[drive], sites=["contoso.sharepoint.com:/sites/nope"])
    listing = sp.list_documents()
    assert not listing.complete and "sites/nope" in listing.errors[0]
    assert [d.uri for d in listing.documents] == ["Documents/eng/note-000.md"]


def test_site_groups_expand_through_the_group_directory(
    server: GraphServer, tmp_path: Path
) -> None:
    from rag.config import DirectorySettings
    from rag.directory import DirectoryStore
    from rag.directory.scim import ScimDirectory

    drive = library(server, files=1)
    (doc,) = connector(server, tmp_path, drives=[drive]).list_documents().documents
    owners = f"sp-site:{site_key(server, drive)}:3"  # the site group's name in the directory
    scim = {
        "Users": {
            "totalResults": 2,
            "Resources": [
                {"id": "u1", "userName": "alice@contoso.com"},
                {"id": "u2", "userName": "mallory@contoso.com"},
            ],
        },
        "Groups": {
            "totalResults": 1,
            "Resources": [
                {
                    "id": "g1",
                    "displayName": "Engineering Owners",
                    "externalId": owners,
                    "members": [{"value": "u1", "type": "User"}],
                },
            ],
        },
    }
    (tmp_path / "scim.json").write_text(json.dumps(scim), "utf-8")
    store = DirectoryStore(tmp_path / "directory.sqlite")
    source = ScimDirectory(DirectorySettings(backend="scim", scim_path=tmp_path / "scim.json"))
    assert store.sync(source).applied
    assert doc.acl is not None
    assert doc.acl.permits(store.resolve("alice@contoso.com").principals())
    assert not doc.acl.permits(store.resolve("mallory@contoso.com").principals())
    store.close()


# -- permissions and snapshots from Graph's documented shapes --------------------------------------


def golden(name: str) -> Any:
    return json.loads((GOLDEN / name).read_text("utf-8"))


def test_documented_permissions_map_to_principals() -> None:
    grants = golden("permissions.json")["value"]
    site = "f2bd5b2f-2e1b-4e6b-9a5c-7d2f9c3b8a11"
    acl, notes = PrincipalMap().acl(grants, site, NOW)
    assert acl.allow == {
        f"group:sp-site:{site}:3",  # the site's owners read
        "user:meganb@contoso.com",  # from the membership claim
        "group:02bd9fd6-8f93-4758-87c3-1fb73740a315",
        "user:mistys@contoso.com",  # a specific-people link
        "user:judithc@contoso.com",
    }  # no anonymous or organization link, no expired link, no application
    assert any("owners of a Microsoft 365 group" in n for n in notes)
    assert any("Everyone except external users" in n for n in notes)
    wide, _ = PrincipalMap(anonymous=PUBLIC, organization="group:everyone").acl(grants, site, NOW)
    assert wide.allow - acl.allow == {PUBLIC, "group:everyone"}
    by_id, _ = PrincipalMap(user_property="id", group_property="name").acl(grants, site, NOW)
    assert {
        "user:48d31887-5fad-4d73-a9f5-3c356e68a038",
        "user:35fij1974gb8832",
        "group:hr taskforce",
        f"group:sp-site:{site}:engineering owners",
    } <= by_id.allow
    by_mail, _ = PrincipalMap(user_property="email").acl(grants, site, NOW)
    assert "user:mistys@contoso.com" in by_mail.allow
    expired_later, _ = PrincipalMap().acl(grants, site, datetime(2019, 1, 1, tzinfo=UTC))
    assert "user:contractor@fabrikam.com" in expired_later.allow


def test_unmappable_identities_are_dropped_never_widened() -> None:
    grants = [
        {"roles": ["read"], "grantedToV2": {"user": {"displayName": "No Id"}}},
        {"roles": ["read"], "grantedToV2": {"siteUser": {"loginName": "c:0-.f|weird|x"}}},
        {"roles": ["restrictedView"], "grantedToV2": {"group": {"id": "viewers"}}},
        {"roles": ["read"], "grantedToV2": {"user": {"id": "u", "email": "a\u200bb@x"}}},
    ]
    acl, notes = PrincipalMap().acl(grants, "s", NOW)
    assert acl.is_empty
    assert len(notes) == 3


def test_documented_delta_pages_build_the_snapshot() -> None:
    snapshot = DriveSnapshot("b!t18F")
    for item in golden("delta_page_next.json")["value"]:
        snapshot.apply(item)
    assert [p for _, p, _ in snapshot.files()] == ["eng/note-001.md"]
    for item in golden("delta_page_final.json")["value"]:
        snapshot.apply(item)
    files = {p: r for _, p, r in snapshot.files()}
    assert sorted(files) == ["eng/note-001.md", "eng/salaries.pdf"]
    assert files["eng/salaries.pdf"]["hashes"] == {"quickXorHash": "s3x0r1xVb8qT0xWm7yYpJtZcz1k="}
    orphan = {"id": "x", "name": "lost.md", "file": {}, "parentReference": {"id": "gone"}}
    snapshot.apply(orphan)
    assert snapshot.prune() == 1 and "x" not in snapshot.items


# -- the sync contract ----------------------------------------------------------------------------


@pytest.fixture
def sync_settings(settings: Settings) -> Settings:
    return settings


def acl_grants(acl: Acl) -> list[dict[str, Any]]:
    """The unique permissions that give ``acl`` (SharePoint has no deny)."""
    if acl.deny:
        raise AssertionError(f"SharePoint cannot express deny entries: {sorted(acl.deny)}")
    grants = []
    for principal in sorted(acl.allow):
        kind, _, ident = principal.partition(":")
        if principal == PUBLIC:
            grants.append(link_grant("organization"))
        elif kind == "user":
            grants.append(user_grant(ident))
        else:
            grants.append(group_grant(ident))
    return grants


class MirroredDrive:
    """Mirrors the folder into a loopback drive each time it lists, then lists via Graph."""

    def __init__(self, root: Path, server: GraphServer) -> None:
        self._root = root
        self._server = server
        self._drive = f"b!{stable_hash(str(root), length=20)}"
        if self._drive not in server.drives:
            server.add_drive(self._drive, root_permissions=[])
        self._inner = from_options(
            "src",
            {
                **options(server, root.parent, drives=[self._drive]),
                "organization_links": "public",
                "state_dir": str(root.parent / "sp-state"),
            },
            root.parent,
        )

    @property
    def name(self) -> str:
        return self._inner.name

    def list_documents(self) -> Listing:
        files: dict[str, tuple[bytes, list[dict[str, Any]], tuple[int, str] | None]] = {}
        for doc in FilesystemConnector(self._root, "src").list_documents().documents:
            content = (self._root / doc.uri).read_bytes()
            if doc.acl is None:  # a broken policy, or none: Graph refuses, saying why
                files[doc.uri] = (content, [], (403, doc.acl_error or "no ACL"))
            else:
                files[doc.uri] = (content, acl_grants(doc.acl), None)
        self._server.sync_files(self._drive, files)
        return self._inner.list_documents()

    def read(self, document: SourceDocument) -> bytes:
        return self._inner.read(document)


NO_DENY = "SharePoint permissions have no deny: the SharePoint form of this test follows"


@pytest.mark.slow
class TestSharePointSync(SyncContract):
    @pytest.fixture(autouse=True)
    def _graph(self, graph: GraphServer) -> None:
        self.server = graph

    def connector(self, root: Path) -> MirroredDrive:
        return MirroredDrive(root, self.server)

    # SharePoint revokes by removing a grant, never by adding a deny: these are the contract's
    # deny tests with the same assertions, narrowed the way SharePoint narrows.
    def test_revoking_a_user_takes_one_sync(self, sync_settings: Settings, tmp_path: Path) -> None:
        root = make_corpus(tmp_path / "src")
        policy(root, 'allow = ["group:eng"]\n[files."note-003.md"]\nallow = ["user:bob"]\n')
        run(root, sync_settings)
        assert "eng/note-003.md" in uris(sync_settings, ALICE)
        policy(
            root,
            'allow = ["group:eng"]\n[files."note-003.md"]\ninherit = false\nallow = ["user:bob"]\n',
        )
        summary = run(root, sync_settings)
        assert (summary.acl_only, summary.embedding_calls) == (1, 0)
        assert summary.revocation_delay_seconds is not None
        assert "eng/note-003.md" not in uris(sync_settings, ALICE)
        assert "eng/note-003.md" in uris(sync_settings, BOB)

    def test_acl_narrowed_with_a_content_change_applies_before_reembedding(
        self, sync_settings: Settings, tmp_path: Path
    ) -> None:
        root = make_corpus(tmp_path / "src", docs=3)
        policy(root, 'allow = ["group:eng"]\n[files."note-001.md"]\nallow = ["user:bob"]\n')
        run(root, sync_settings)
        policy(
            root,
            'allow = ["group:eng"]\n[files."note-001.md"]\ninherit = false\nallow = ["user:bob"]\n',
        )
        note = root / "eng" / "note-001.md"
        note.write_text(note.read_text() + "\nNew secret paragraph.\n")
        planned = sync_contract.begin_and_revoke(sync_settings, root)
        assert [d.uri for d in planned.plan.changed] == ["eng/note-001.md"]
        assert "eng/note-001.md" not in uris(sync_settings, ALICE)
        assert "eng/note-001.md" in uris(sync_settings, BOB)

    def test_revocation_reaches_a_quarantined_document(
        self, sync_settings: Settings, tmp_path: Path
    ) -> None:
        secret = sync_contract.SECRET
        root = make_corpus(tmp_path / "src", docs=3)
        policy(root, 'allow = ["group:eng"]\n[files."note-001.md"]\nallow = ["user:Bob"]\n')
        run(root, sync_settings)
        (root / secret).write_bytes(b"")
        broken = run(root, sync_settings)
        assert [r.uri for r in broken.quarantined] == [secret]
        assert secret in uris(sync_settings, ALICE)
        policy(
            root,
            'allow = ["group:eng"]\n[files."note-001.md"]\ninherit = false\nallow = ["user:Bob"]\n',
        )
        killed = sync_contract.begin_and_revoke(sync_settings, root)
        assert killed.summary.revocation_delay_seconds is not None
        assert secret not in uris(sync_settings, ALICE)
        run(root, sync_settings)
        assert secret not in uris(sync_settings, ALICE)
        assert secret in uris(sync_settings, BOB)
        (root / secret).unlink()
        run(root, sync_settings)
        assert secret not in uris(sync_settings, BOB)

    @pytest.mark.skip(reason="SharePoint permissions have no deny to inherit")
    def test_deny_survives_inherit_false_below(
        self, sync_settings: Settings, tmp_path: Path
    ) -> None:
        pass

    def test_an_index_with_pre_canonical_ids_is_migrated_by_one_sync(
        self, sync_settings: Settings, tmp_path: Path
    ) -> None:
        from rag.stores import build_store

        root = make_corpus(tmp_path / "src", docs=2)
        policy(root, 'allow = ["group:Eng"]\n')
        run(root, sync_settings)
        store = build_store(sync_settings)
        states = store.sync_state().load("src")
        old = Acl.model_construct(allow=frozenset({"group:Eng"}), deny=frozenset())
        old_digest = stable_hash(json.dumps([sorted(old.allow), sorted(old.deny)]))
        for state in states.values():
            store.update_acl(state.document_id, old)
        store.sync_state().put(
            [s.model_copy(update={"acl_digest": old_digest}) for s in states.values()]
        )
        store.refresh()
        summary = run(root, sync_settings)
        assert (summary.acl_only, summary.embedding_calls) == (2, 0)
        acls = {acl for _, _, acl in sync_contract.rows(store).values()}
        assert acls == {json.dumps([["group:eng"], []])}
        assert len(uris(sync_settings, ALICE)) == 2

    def test_real_world_ids_end_to_end(self, sync_settings: Settings, tmp_path: Path) -> None:
        root = make_corpus(tmp_path / "src", docs=2)
        policy(
            root,
            """allow = ['group:CORP\\Domain Users', "user:O'Brien@Example.com",
                     "group:CN=Finance Team,OU=Groups,DC=corp,DC=example", "group:日本"]
""",
        )
        run(root, sync_settings)
        everything = {"eng/note-000.md", "eng/note-001.md"}
        assert uris(sync_settings, UserContext.of("o'brien@example.com")) == everything
        assert uris(sync_settings, UserContext.of("x", ["corp\\DOMAIN USERS"])) == everything
        cn = "cn=finance team,ou=groups,dc=corp,dc=example"
        assert uris(sync_settings, UserContext.of("y", [cn])) == everything
        assert uris(sync_settings, UserContext.of("z", ["日本"])) == everything
        assert uris(sync_settings, UserContext.of("w", ["CORP\\Domain"])) == set()
        assert uris(sync_settings, UserContext.of("mallory@corp.example")) == set()


@pytest.mark.integration
@pytest.mark.extended
class TestSharePointSyncOnOpenSearch(TestSharePointSync):
    """The same contract over Graph with the OpenSearch store."""

    only = ACCESS_CORE

    @pytest.fixture
    def sync_settings(self, opensearch_sync_settings: Settings) -> Settings:
        return opensearch_sync_settings
