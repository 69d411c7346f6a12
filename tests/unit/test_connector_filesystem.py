from __future__ import annotations

from pathlib import Path

import pytest

from connectors.base import Listing
from connectors.filesystem import FilesystemConnector
from rag.errors import ConnectorError
from rag.identity import PUBLIC


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    write(tmp_path, ".rag-acl.toml", 'allow = ["group:staff"]\ndeny = ["user:intern"]\n')
    write(tmp_path, "welcome.md", "# Welcome")
    write(
        tmp_path,
        "hr/.rag-acl.toml",
        """allow = ["group:hr"]
[files."payroll.txt"]
inherit = false
allow = ["group:payroll"]
""",
    )
    write(tmp_path, "hr/policy.md", "policy")
    write(tmp_path, "hr/payroll.txt", "numbers")
    write(tmp_path, "hr/private/.rag-acl.toml", 'inherit = false\nallow = ["user:ceo"]\n')
    write(tmp_path, "hr/private/plan.md", "plan")
    write(tmp_path, "news/.rag-acl.toml", "public = true\n")
    write(tmp_path, "news/post.md", "post")
    write(tmp_path, ".hidden/secret.md", "never listed")
    return tmp_path


def acls(connector: FilesystemConnector) -> dict[str, tuple[set[str], set[str]]]:
    listing = connector.list_documents()
    return {d.uri: (set(d.acl.allow), set(d.acl.deny)) for d in listing.documents if d.acl}


def test_inheritance_overrides_and_deny(tree: Path) -> None:
    got = acls(FilesystemConnector(tree, "corp"))
    assert got == {
        "welcome.md": ({"group:staff"}, {"user:intern"}),
        "hr/policy.md": ({"group:staff", "group:hr"}, {"user:intern"}),
        # inherit = false resets the allow list only: a parent's deny always applies below
        "hr/payroll.txt": ({"group:payroll"}, {"user:intern"}),
        "hr/private/plan.md": ({"user:ceo"}, {"user:intern"}),
        "news/post.md": ({"group:staff", PUBLIC}, {"user:intern"}),
    }


def test_ids_and_hashes_are_stable(tree: Path) -> None:
    first = FilesystemConnector(tree, "corp").list_documents()
    second = FilesystemConnector(tree, "corp").list_documents()
    assert [(d.id, d.content_hash) for d in first.documents] == [
        (d.id, d.content_hash) for d in second.documents
    ]
    assert first.complete
    other = FilesystemConnector(tree, "other").list_documents()
    assert {d.id for d in other.documents}.isdisjoint({d.id for d in first.documents})


def test_file_without_policy_has_no_acl(tmp_path: Path) -> None:
    write(tmp_path, "loose.txt", "no policy anywhere")
    (doc,) = FilesystemConnector(tmp_path, "x").list_documents().documents
    assert doc.acl is None


def hidden(listing: Listing) -> dict[str, str]:
    return {d.uri: d.acl_error for d in listing.documents if d.acl_error is not None}


def test_malformed_policy_hides_everything_it_governs_and_names_file_line_value(
    tree: Path,
) -> None:
    write(tree, "hr/.rag-acl.toml", 'allow = ["group:hr"]\ndeny = ["user:ok", "user:\\u200bx"]\n')
    listing = FilesystemConnector(tree, "corp").list_documents()
    assert listing.complete  # every file is known: only its ACL is broken
    got = hidden(listing)
    assert set(got) == {"hr/policy.md", "hr/payroll.txt", "hr/private/plan.md"}
    assert all(d.acl is None for d in listing.documents if d.uri in got)
    (problem,) = listing.policy_errors
    assert "hr/.rag-acl.toml: line 2" in problem and "U+200B" in problem
    assert "welcome.md" not in got


def test_toml_syntax_error_names_the_line(tree: Path) -> None:
    write(tree, "news/.rag-acl.toml", "public = true\nallow = [broken\n")
    listing = FilesystemConnector(tree, "corp").list_documents()
    assert set(hidden(listing)) == {"news/post.md"}
    assert "news/.rag-acl.toml" in listing.policy_errors[0]
    assert "line 2" in listing.policy_errors[0]


@pytest.mark.parametrize(
    ("policy", "needle"),
    [
        ("publik = true\n", "line 1: key publik"),
        ('allow = "group:hr"\n', "line 1: key allow"),
        ('inherit = "no"\n', "line 1: key inherit"),
        ('[files."post.md"]\nallow = [1]\n', "line 2"),
    ],
)
def test_wrong_keys_and_types_are_policy_errors(tree: Path, policy: str, needle: str) -> None:
    write(tree, "news/.rag-acl.toml", policy)
    listing = FilesystemConnector(tree, "corp").list_documents()
    assert set(hidden(listing)) == {"news/post.md"}
    assert needle in listing.policy_errors[0], listing.policy_errors


@pytest.mark.parametrize("key", ["Payroll.txt", "sub/payroll.txt", "payroll.tx"])
def test_override_that_matches_no_file_hides_the_folder(tree: Path, key: str) -> None:
    write(tree, "hr/.rag-acl.toml", f'allow = ["group:hr"]\n[files."{key}"]\nallow = ["user:x"]\n')
    listing = FilesystemConnector(tree, "corp").list_documents()
    assert set(hidden(listing)) == {"hr/policy.md", "hr/payroll.txt", "hr/private/plan.md"}
    assert key in listing.policy_errors[0]
    if key == "Payroll.txt":
        assert "did you mean 'payroll.txt'" in listing.policy_errors[0]


def test_invalid_allow_entry_is_dropped_and_reported(tree: Path) -> None:
    write(tree, "news/.rag-acl.toml", 'allow = ["group:news", "group:\\u0000", "nobody"]\n')
    listing = FilesystemConnector(tree, "corp").list_documents()
    post = next(d for d in listing.documents if d.uri == "news/post.md")
    assert post.acl is not None and post.acl.allow == {"group:staff", "group:news"}
    assert len(listing.policy_errors) == 2
    assert all("allow entry dropped" in p for p in listing.policy_errors)


def test_real_world_ids_are_canonical(tmp_path: Path) -> None:
    write(
        tmp_path,
        ".rag-acl.toml",
        """allow = ["user:O'Brien@Example.com", 'group:CORP\\Domain Users',
  "group:CN=Finance Team,OU=Groups,DC=corp,DC=example", "group:c:0t.c|tenant|9f2e",
  "user:i:0#.f|membership|alice@corp.example", "group:日本", " group:Zoë.Ødegaard "]
deny = ["user:Mallory@Corp.example", "user:SVC-BACKUP$"]
""",
    )
    write(tmp_path, "a.md", "a")
    (doc,) = FilesystemConnector(tmp_path, "x").list_documents().documents
    assert doc.acl is not None
    assert doc.acl.allow == {
        "user:o'brien@example.com",
        "group:corp\\domain users",
        "group:cn=finance team,ou=groups,dc=corp,dc=example",
        "group:c:0t.c|tenant|9f2e",
        "user:i:0#.f|membership|alice@corp.example",
        "group:日本",
        "group:zoë.ødegaard",
    }
    assert doc.acl.deny == {"user:mallory@corp.example", "user:svc-backup$"}


def test_case_sensitive_source_keeps_case_and_denies_every_spelling(tmp_path: Path) -> None:
    write(tmp_path, ".rag-acl.toml", 'allow = ["group:Eng"]\ndeny = ["user:Mallory"]\n')
    write(tmp_path, "a.md", "a")
    (doc,) = FilesystemConnector(tmp_path, "x", case_sensitive_ids=True).list_documents().documents
    assert doc.acl is not None
    assert doc.acl.allow == {"group.cs:Eng"}
    assert doc.acl.deny == {"user.cs:Mallory", "user:mallory"}


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(ConnectorError):
        FilesystemConnector(tmp_path / "nope").list_documents()


def test_read_returns_bytes(tree: Path) -> None:
    connector = FilesystemConnector(tree, "corp")
    doc = next(d for d in connector.list_documents().documents if d.uri == "news/post.md")
    assert connector.read(doc) == b"post"


def test_source_name_is_validated(tmp_path: Path) -> None:
    from rag.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        FilesystemConnector(tmp_path, "../escape")
