from __future__ import annotations

from pathlib import Path

import pytest

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
        "hr/payroll.txt": ({"group:payroll"}, set()),
        "hr/private/plan.md": ({"user:ceo"}, set()),
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


def test_malformed_policy_hides_its_files_and_marks_listing_incomplete(tree: Path) -> None:
    write(tree, "hr/.rag-acl.toml", 'allow = ["group:hr", "not a principal"]\n')
    listing = FilesystemConnector(tree, "corp").list_documents()
    assert not listing.complete
    assert listing.errors and "hr" in listing.errors[0]
    assert not any(d.uri.startswith("hr/") for d in listing.documents)
    assert any(d.uri == "welcome.md" for d in listing.documents)


def test_unknown_policy_keys_are_errors(tree: Path) -> None:
    write(tree, "news/.rag-acl.toml", "publik = true\n")
    assert not FilesystemConnector(tree, "corp").list_documents().complete


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
