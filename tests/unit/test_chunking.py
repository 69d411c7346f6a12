from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rag.chunking import Chunker
from rag.config import ChunkingSettings
from rag.errors import MissingAclError
from rag.models import Acl, SourceDocument
from rag.parsing import Element


def doc(acl: Acl | None = Acl(allow=frozenset({"group:hr"}))) -> SourceDocument:  # noqa: B008
    return SourceDocument(
        source="s",
        id="doc1",
        uri="a/b.md",
        title="b",
        mime_type="text/markdown",
        content_hash="0" * 64,
        size_bytes=1,
        modified_at=datetime(2026, 1, 1, tzinfo=UTC),
        acl=acl,
    )


def test_titles_start_sections_and_chunks_carry_acl_and_citation() -> None:
    chunker = Chunker(ChunkingSettings(max_tokens=50, overlap_tokens=5))
    elements = [
        Element("Title", "Handbook"),
        Element("Title", "Leave"),
        Element("NarrativeText", "Employees get 27 days of leave.", page=2),
        Element("Title", "Remote"),
        Element("NarrativeText", "Work from home twice a week."),
    ]
    chunks = chunker.chunk(doc(), elements)
    assert [c.text for c in chunks] == [
        "Handbook\n\nLeave\n\nEmployees get 27 days of leave.",
        "Remote\n\nWork from home twice a week.",
    ]
    assert [c.citation.section for c in chunks] == ["Leave", "Remote"]
    assert chunks[0].citation.page == 2
    assert all(c.acl == doc().acl for c in chunks)
    assert [c.ordinal for c in chunks] == [0, 1]


def test_chunk_ids_are_deterministic() -> None:
    chunker = Chunker(ChunkingSettings())
    elements = [Element("NarrativeText", "word " * 1000)]
    first = chunker.chunk(doc(), elements)
    second = Chunker(ChunkingSettings()).chunk(doc(), elements)
    assert [c.id for c in first] == [c.id for c in second]
    assert len({c.id for c in first}) == len(first) > 1


def test_missing_or_empty_acl_is_refused() -> None:
    chunker = Chunker(ChunkingSettings())
    with pytest.raises(MissingAclError):
        chunker.chunk(doc(acl=None), [Element("NarrativeText", "x")])
    with pytest.raises(MissingAclError):
        chunker.chunk(doc(acl=Acl()), [Element("NarrativeText", "x")])


def test_overlap_repeats_context() -> None:
    chunker = Chunker(ChunkingSettings(max_tokens=40, overlap_tokens=10))
    sentences = [
        Element("NarrativeText", f"Sentence number {i} says something short.") for i in range(12)
    ]
    chunks = chunker.chunk(doc(), sentences)
    assert len(chunks) > 2
    for before, after in itertools.pairwise(chunks):
        assert before.text.split("\n\n")[-1] in after.text


texts = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=600
)


@settings(max_examples=150, deadline=None)
@given(
    paragraphs=st.lists(st.tuples(st.booleans(), texts), min_size=1, max_size=25),
    size=st.integers(16, 120),
    overlap_share=st.floats(0, 0.45),
)
def test_chunks_respect_size_and_cover_text(
    paragraphs: list[tuple[bool, str]], size: int, overlap_share: float
) -> None:
    cfg = ChunkingSettings(max_tokens=size, overlap_tokens=int(size * overlap_share))
    chunker = Chunker(cfg)
    elements = [
        Element("Title" if t else "NarrativeText", s.strip()) for t, s in paragraphs if s.strip()
    ]
    if not elements:
        return
    chunks = chunker.chunk(doc(), elements)
    assert chunks
    for chunk in chunks:
        # a single window may re-tokenize a few tokens longer at its edges
        assert chunk.token_count <= size + 4, (chunk.token_count, size)
    # nothing is lost: every non-space character of the input appears in some chunk
    source = Counter(ch for e in elements for ch in e.text if not ch.isspace())
    produced = Counter(ch for c in chunks for ch in c.text if not ch.isspace())
    assert not source - produced, source - produced


def test_token_counts_are_those_of_the_chunk_texts() -> None:
    """Chunks of one unit reuse its count; every count is still the text's own."""
    chunker = Chunker(ChunkingSettings(max_tokens=40, overlap_tokens=8))
    elements = [
        Element("Title", "Leave policy"),
        Element("NarrativeText", "Employees get 27 days of leave. " * 12),  # split in windows
        Element("NarrativeText", "Short one."),
        Element("ListItem", "Work from home twice a week."),
        Element("Title", "Travel"),
        Element("NarrativeText", "Book through the portal <|endoftext|> as usual."),
    ]
    checked = datetime(2026, 1, 2, tzinfo=UTC)
    chunks = chunker.chunk(doc().model_copy(update={"acl_checked_at": checked}), elements)
    assert len(chunks) > 3
    assert [c.token_count for c in chunks] == [chunker.count_tokens(c.text) for c in chunks]
    encoding = chunker.encoding
    assert all(c.token_count == len(encoding.encode(c.text, disallowed_special=())) for c in chunks)
    assert {c.acl_checked_at for c in chunks} == {checked}
