"""At query time: a verified token and the synced directory decide the principals (issue 13)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from connectors.filesystem import FilesystemConnector
from rag.cli import app
from rag.config import Settings
from rag.directory import directory_path
from rag.directory.base import DirectoryGroup, DirectorySnapshot, DirectoryUser
from rag.directory.store import DirectoryStore
from rag.errors import AuthenticationError, ConfigurationError
from rag.identity import UserContext
from rag.pipeline import ingest
from rag.resolve import IdentityResolver
from rag.retrieval import Retriever
from tests.unit.test_auth import AUDIENCE, DROP, IdP, make_token


def snapshot(memberships: dict[str, list[str]]) -> DirectorySnapshot:
    """alice (e-mail, CORP\\alice, an Entra object id), bob; eng-backend is inside eng."""
    return DirectorySnapshot(
        source="test",
        users=(
            DirectoryUser(
                id="alice",
                aliases=frozenset({"alice@corp.example", "CORP\\alice", "0f3c-oid-alice"}),
            ),
            DirectoryUser(id="bob", aliases=frozenset({"bob@corp.example"})),
        ),
        groups=(
            DirectoryGroup(id="eng", member_groups=frozenset({"eng-backend"})),
            *(
                DirectoryGroup(id=g, member_users=frozenset(users))
                for g, users in memberships.items()
            ),
        ),
        complete=True,
    )


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")


@pytest.fixture
def settings(tmp_path: Path, idp_server: IdP) -> Settings:
    """Two sources naming alice differently, an eng folder, and a directory beside the index."""
    a, b = tmp_path / "wiki", tmp_path / "share"
    write(a, ".rag-acl.toml", 'allow = ["user:alice@corp.example"]\n')
    write(a, "alice-notes.md", "# Notes\n\nAlice's design notes on the subsystem.\n")
    write(b, ".rag-acl.toml", "allow = ['user:CORP\\alice']\n")
    write(b, "alice-review.md", "# Review\n\nAlice's design review of the subsystem.\n")
    write(b, "eng/.rag-acl.toml", 'inherit = false\nallow = ["group:eng"]\n')
    write(b, "eng/roadmap.md", "# Roadmap\n\nThe engineering design roadmap for the subsystem.\n")
    settings = Settings.model_validate(
        {
            "data_dir": str(tmp_path / "data"),
            "embedding": {"provider": "hash"},
            "directory": {"backend": "scim", "scim_path": str(tmp_path / "unused.json")},
            "auth": {"issuer": idp_server.issuer, "audience": [AUDIENCE], "user_claim": "oid"},
        }
    )
    ingest(FilesystemConnector(a, "wiki"), settings)
    ingest(FilesystemConnector(b, "share"), settings)
    DirectoryStore(directory_path(settings)).apply(snapshot({"eng-backend": ["bob"]}))
    return settings


def uris(settings: Settings, user: UserContext) -> set[str]:
    hits = Retriever.from_settings(settings).retrieve("design subsystem", user, k=20)
    return {h.chunk.citation.uri for h in hits}


def test_nested_groups_grant_access_and_a_directory_sync_revokes_it(settings: Settings) -> None:
    bob = UserContext.of("bob")  # a trusted caller with no groups of its own
    assert uris(settings, bob) == {"eng/roadmap.md"}  # bob -> eng-backend -> eng
    DirectoryStore(directory_path(settings)).apply(snapshot({"eng-backend": []}))
    assert uris(settings, bob) == set()  # no re-ingest


def test_a_token_with_only_an_object_id_reads_what_names_the_users_other_ids(
    settings: Settings, idp_server: IdP
) -> None:
    token = make_token(idp_server, sub="x", oid="0f3c-oid-alice", groups=DROP)
    alice = IdentityResolver(settings).from_token(token)
    assert alice.issuer == idp_server.issuer
    assert uris(settings, alice) == {"alice-notes.md", "alice-review.md"}
    no_directory = settings.model_copy(
        update={"directory": settings.directory.model_copy(update={"backend": "none"})}
    )
    alone = IdentityResolver(no_directory).from_token(token)
    assert uris(no_directory, alone) == set()


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("token", {"eng/roadmap.md"}),
        ("directory", set()),
        ("both", {"eng/roadmap.md"}),
    ],
)
def test_group_source(settings: Settings, idp_server: IdP, source: str, expected: set[str]) -> None:
    chosen = settings.model_copy(
        update={"directory": settings.directory.model_copy(update={"group_source": source})}
    )
    token = make_token(idp_server, oid="alice", groups=["eng"])  # alice is in no group here
    user = IdentityResolver(chosen).from_token(token)
    got = uris(chosen, user) - {"alice-notes.md", "alice-review.md"}
    assert got == expected


def test_groups_overage_takes_the_groups_from_the_directory(
    settings: Settings, idp_server: IdP
) -> None:
    tokens_only = settings.model_copy(
        update={"directory": settings.directory.model_copy(update={"group_source": "token"})}
    )
    token = make_token(idp_server, oid="bob", groups=DROP, hasgroups=True)
    assert uris(tokens_only, IdentityResolver(tokens_only).from_token(token)) == {"eng/roadmap.md"}


def test_directory_only_without_a_directory_is_a_configuration_error(settings: Settings) -> None:
    broken = settings.model_copy(
        update={
            "directory": settings.directory.model_copy(
                update={"backend": "none", "group_source": "directory"}
            )
        }
    )
    with pytest.raises(ConfigurationError):
        IdentityResolver(broken)


def test_rag_query_with_a_token(
    settings: Settings, idp_server: IdP, monkeypatch: pytest.MonkeyPatch
) -> None:
    env: dict[str, Any] = {
        "RAG_DATA_DIR": str(settings.data_dir),
        "RAG_EMBEDDING__PROVIDER": "hash",
        "RAG_DIRECTORY__BACKEND": "scim",
        "RAG_DIRECTORY__SCIM_PATH": "unused.json",
        "RAG_AUTH__ISSUER": idp_server.issuer,
        "RAG_AUTH__AUDIENCE": json.dumps([AUDIENCE]),
        "RAG_AUTH__USER_CLAIM": "oid",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    runner = CliRunner()
    token = make_token(idp_server, oid="alice@corp.example", groups=DROP)
    ok = runner.invoke(app, ["query", "design subsystem", "--token", token, "--json"])
    assert ok.exit_code == 0, ok.output
    assert {h["citation"]["uri"] for h in json.loads(ok.output)["hits"]} == {
        "alice-notes.md",
        "alice-review.md",
    }
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    refused = runner.invoke(app, ["query", "design", "--token", forged])
    assert refused.exit_code == 1 and token not in refused.output
    both = runner.invoke(app, ["query", "design", "--token", token, "--user", "x"])
    assert both.exit_code == 2


def test_langchain_adapter_from_a_token(settings: Settings, idp_server: IdP) -> None:
    from rag.retrieval.langchain import PermissionAwareRetriever

    core = Retriever.from_settings(settings)
    resolver = IdentityResolver(settings)
    token = make_token(idp_server, oid="CORP\\alice", groups=DROP)
    docs = PermissionAwareRetriever.from_token(core, resolver, token).invoke("design subsystem")
    assert {d.metadata["uri"] for d in docs} == {"alice-notes.md", "alice-review.md"}
    with pytest.raises(AuthenticationError):
        PermissionAwareRetriever.from_token(core, resolver, token + "x")
