"""The ingestion comparison bench's pieces, on a few tiny files: the corpus builder (types,
policies, determinism), the LangChain baseline's loaders, splitter and embeddings wrapper, and
the report. The timed runs themselves need an OpenSearch node (``python -m bench
ingest_compare``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.ingest_compare import (
    TYPES,
    Result,
    baseline_loaders,
    build_corpus,
    langchain_embeddings,
    median_run,
    profile,
    splitter,
    table,
)
from connectors.filesystem import FilesystemConnector
from rag.embeddings.hashing import HashEmbedder
from rag.tokens import get_encoding


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_corpus_is_deterministic_typed_and_under_policies(tmp_path: Path) -> None:
    info = build_corpus(tmp_path / "a", 10, max_kb=2.0)
    again = build_corpus(tmp_path / "b", 10, max_kb=2.0)
    assert _files(info.root) == _files(again.root)  # .docx included: fixed ZIP timestamps
    assert sum(info.by_type.values()) == 10
    assert set(info.by_type) == set(TYPES)
    documents = [p for p in info.root.rglob("*") if p.is_file() and p.name != ".rag-acl.toml"]
    assert len(documents) == 10
    assert {p.suffix for p in documents} <= {f".{t}" for t in TYPES}
    assert all(len(p.read_bytes()) >= 1000 for p in documents)
    other = build_corpus(tmp_path / "c", 10, seed=17, max_kb=2.0)
    assert _files(other.root) != _files(info.root)

    listing = FilesystemConnector(info.root, "bench").list_documents()
    assert listing.policy_errors == ()
    assert len(listing.documents) == 10
    assert all(d.acl is not None and not d.acl.is_empty for d in listing.documents)
    public = [d for d in listing.documents if d.uri.startswith("public/")]
    assert all("public" in d.acl.allow for d in public if d.acl is not None)
    private = [d for d in listing.documents if not d.uri.startswith("public/")]
    assert private
    assert all("public" not in d.acl.allow for d in private if d.acl is not None)


def test_corpus_refuses_unknown_types(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="types"):
        build_corpus(tmp_path, 3, types=("txt", "xls"))
    assert set(TYPES) == {"txt", "md", "html", "docx", "pdf"}


@pytest.mark.slow  # imports langchain_community (~2 s on a loaded machine)
def test_baseline_loads_splits_and_embeds_the_corpus(tmp_path: Path) -> None:
    get_encoding("cl100k_base")  # the shipped vocabulary (offline)
    info = build_corpus(
        tmp_path, 4, max_kb=3.0, types=("txt", "md", "html", "pdf"), every_kind=True
    )
    docs = [d for _, loader in baseline_loaders(info.root, "per-type") for d in loader.load()]
    assert len({d.metadata["source"] for d in docs}) == 4  # .rag-acl.toml is not loaded
    assert all(d.page_content.strip() for d in docs)
    splits = splitter(200, 32, "cl100k_base").split_documents(docs)
    encoding = get_encoding("cl100k_base")
    assert len(splits) > len(docs)
    assert all(len(encoding.encode(s.page_content)) <= 200 for s in splits)

    embedder = HashEmbedder()
    wrapped = langchain_embeddings(embedder, batch_size=3)
    texts = [s.page_content for s in splits[:5]]
    vectors = wrapped.embed_documents(texts)
    assert np.allclose(np.array(vectors), embedder.embed_batch(texts))
    assert len(wrapped.embed_query(texts[0])) == embedder.dimension


def test_report_names_the_bounding_stage_and_the_time_outside_stages() -> None:
    detail = {"parse": {"pdf": 5.0}, "writes": {"state put (3 calls)": 2.5}}
    ours = Result("ours", 10, 40, 10.0, {"parse": 6.0, "embed": 1.0}, detail)
    base = Result("base", 10, 30, 20.0, {"load": 5.0, "index": 15.0})
    text = profile(ours)
    assert "bound by parse" in text
    assert "(outside stages)" in text
    assert "3.00 s  30.0%" in text  # 10 s wall - 7 s in stages
    assert "pdf" in text
    assert "writes:" in text  # a breakdown that is not a stage gets its own block
    assert "state put (3 calls)" in text
    assert "2.50 s  25.0%" in text
    assert "bound by index" in profile(base)
    rows = table([base, ours], base).splitlines()
    assert rows[1].rstrip().endswith("1.00x")
    assert rows[2].rstrip().endswith("2.00x")  # 1.0 docs/s against 0.5


def test_median_run_keeps_the_middle_wall_time() -> None:
    runs = [Result("r", 1, 1, s, {}) for s in (3.0, 1.0, 2.0, 9.0)]
    assert median_run(runs).seconds == 2.0
    assert median_run(runs[:3]).seconds == 2.0


def test_report_gives_ours_against_every_other_run() -> None:
    from bench.ingest_compare import report

    base = Result("langchain", 10, 20, 10.0, {"load": 10.0})
    before = Result("ours at old", 10, 25, 5.0, {"parse": 5.0})
    ours = Result("ours", 10, 25, 2.0, {"parse": 2.0})

    class _Corpus:
        documents = 10

        def describe(self) -> str:
            return "10 documents"

    text = report("hash", _Corpus(), [base, before, ours])  # type: ignore[arg-type]
    assert "ours / langchain: 5.00x docs/s" in text
    assert "ours / ours at old: 2.50x docs/s, 2.50x chunks/s" in text
