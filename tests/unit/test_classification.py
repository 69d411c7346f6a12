from __future__ import annotations

from pathlib import Path

import pytest

from connectors.filesystem import FilesystemConnector
from rag.classification import check_allowed, target_names
from rag.config import ClassificationSettings, EmbeddingSettings, Settings
from rag.embeddings.hashing import HashEmbedder
from rag.errors import ClassificationBlockedError
from rag.estimate import estimate
from rag.models import SourceDocument
from rag.pipeline import ingest


def test_target_names() -> None:
    assert target_names(EmbeddingSettings(provider="minilm")) >= {"minilm", "local", "self-hosted"}
    sm = EmbeddingSettings(provider="sagemaker", sagemaker={"endpoint_name": "inf2-e5"})
    assert target_names(sm) == {"sagemaker", "sagemaker:inf2-e5", "self-hosted"}
    bedrock = target_names(EmbeddingSettings(provider="bedrock"))
    assert "shared-api" in bedrock and "self-hosted" not in bedrock


def _doc(label: str | None) -> SourceDocument:
    return SourceDocument.model_validate(
        {
            "source": "s",
            "id": "d",
            "uri": "d.md",
            "title": "d",
            "mime_type": "text/markdown",
            "content_hash": "h",
            "size_bytes": 1,
            "modified_at": "2026-01-01T00:00:00Z",
            "acl": {"allow": ["public"]},
            "classification": label,
        }
    )


@pytest.mark.parametrize(
    ("label", "provider", "blocked"),
    [
        ("restricted", "bedrock", True),
        (" Restricted ", "bedrock", True),
        ("restricted", "sagemaker", False),
        ("restricted", "minilm", False),
        ("confidential", "bedrock", False),
        (None, "bedrock", False),
    ],
)
def test_default_policy(label: str | None, provider: str, blocked: bool) -> None:
    embedding = EmbeddingSettings(provider=provider, sagemaker={"endpoint_name": "e"})  # type: ignore[arg-type]
    if blocked:
        with pytest.raises(ClassificationBlockedError, match="restricted"):
            check_allowed(_doc(label), ClassificationSettings(), embedding)
    else:
        check_allowed(_doc(label), ClassificationSettings(), embedding)


def test_endpoint_specific_policy_and_default_label() -> None:
    policy = ClassificationSettings(
        default_label="Confidential", allowed_targets={"confidential": ["sagemaker:inf2-only"]}
    )
    ok = EmbeddingSettings(provider="sagemaker", sagemaker={"endpoint_name": "inf2-only"})
    other = EmbeddingSettings(provider="sagemaker", sagemaker={"endpoint_name": "shared"})
    check_allowed(_doc(None), policy, ok)
    with pytest.raises(ClassificationBlockedError):
        check_allowed(_doc(None), policy, other)


class CountingConnector(FilesystemConnector):
    reads: list[str]

    def read(self, document: SourceDocument) -> bytes:
        self.reads.append(document.uri)
        return super().read(document)


def test_blocked_documents_are_quarantined_and_never_read(tmp_path: Path) -> None:
    root = tmp_path / "src"
    (root / "vault").mkdir(parents=True)
    (root / ".rag-acl.toml").write_text('allow = ["group:staff"]\n')
    (root / "vault" / ".rag-acl.toml").write_text('classification = "restricted"\n')
    (root / "open.md").write_text("# Open\n\nAnyone on staff may read this.\n")
    (root / "vault" / "keys.md").write_text("# Keys\n\nThe launch codes.\n")
    settings = Settings(data_dir=tmp_path / "data", embedding={"provider": "bedrock"})
    connector = CountingConnector(root, "src")
    connector.reads = []
    dry = estimate(connector, settings, embedder=HashEmbedder(384))
    assert dry.by_classification == {
        "internal": {"sent to bedrock": 1},
        "restricted": {"blocked": 1},
    }
    summary = ingest(connector, settings, embedder=HashEmbedder(384))
    assert [(r.uri, r.reason) for r in summary.quarantined] == [
        ("vault/keys.md", "classification_blocked")
    ]
    assert summary.documents_ingested == 1
    assert "vault/keys.md" not in connector.reads


def test_policy_labels_inherit_and_files_override(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / ".rag-acl.toml").write_text('public = true\nclassification = "Internal"\n')
    (tmp_path / "a" / ".rag-acl.toml").write_text('[files."x.md"]\nclassification = "restricted"\n')
    (tmp_path / "a" / "x.md").write_text("x")
    (tmp_path / "a" / "y.md").write_text("y")
    listing = FilesystemConnector(tmp_path, "s").list_documents()
    assert {d.uri: d.classification for d in listing.documents} == {
        "a/x.md": "restricted",
        "a/y.md": "internal",
    }
