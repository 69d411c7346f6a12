"""Token-aware, structure-aware chunking.

A title starts a new section; chunks never span two sections. Inside a section, whole elements
are packed greedily up to ``max_tokens``; an element larger than that is cut into token windows at
UTF-8 character boundaries. Consecutive chunks of a section share ``overlap_tokens`` of context.
Chunk ids depend only on the document id and the chunk's ordinal, so re-runs upsert in place.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC

import tiktoken

from rag.config import ChunkingSettings
from rag.errors import MissingAclError
from rag.models import Chunk, Citation, MetadataValue, SourceDocument
from rag.parsing import Element
from rag.tokens import get_encoding

_SEPARATOR = "\n\n"


@dataclass
class _Unit:
    text: str
    tokens: int
    page: int | None


@dataclass
class _Section:
    title: str | None
    units: list[_Unit] = field(default_factory=list)


class Chunker:
    """Splits parsed documents into chunks; holds the tokenizer, no other state."""

    def __init__(self, settings: ChunkingSettings) -> None:
        self._settings = settings
        self._encoding: tiktoken.Encoding | None = None

    @property
    def encoding(self) -> tiktoken.Encoding:
        if self._encoding is None:
            self._encoding = get_encoding(self._settings.encoding)
        return self._encoding

    def count_tokens(self, text: str) -> int:
        # encode_ordinary: the tokens of encode(text, disallowed_special=()) (special tokens'
        # text counts as ordinary text), without the special-token bookkeeping per call
        return len(self.encoding.encode_ordinary(text))

    def chunk(self, document: SourceDocument, elements: Sequence[Element]) -> list[Chunk]:
        """The chunks of one document, each carrying the document's ACL."""
        if document.acl is None or document.acl.is_empty:
            raise MissingAclError(f"document {document.uri} has no ACL")
        chunks: list[Chunk] = []
        metadata = _chunk_metadata(document)
        for section in self._sections(elements):
            for text, page, tokens in self._pack(section):
                ordinal = len(chunks)
                chunks.append(
                    Chunk(
                        id=Chunk.make_id(document.id, ordinal),
                        document_id=document.id,
                        source=document.source,
                        ordinal=ordinal,
                        text=text,
                        token_count=self.count_tokens(text) if tokens is None else tokens,
                        acl=document.acl,
                        citation=Citation(
                            document_id=document.id,
                            uri=document.uri,
                            title=document.title,
                            section=section.title,
                            page=page,
                        ),
                        metadata=dict(metadata),
                        acl_checked_at=document.acl_checked_at,
                    )
                )
        return chunks

    def _sections(self, elements: Sequence[Element]) -> Iterator[_Section]:
        section = _Section(title=None)
        has_body = False
        for element in elements:
            if element.is_title:
                if has_body:  # a title after body text starts a new section;
                    yield section  # consecutive titles form one heading path
                    section, has_body = _Section(title=None), False
                section.title = element.text
            else:
                has_body = True
            tokens = self.encoding.encode_ordinary(element.text)
            if len(tokens) <= self._settings.max_tokens:  # one unit: its tokens are counted
                section.units.append(_Unit(element.text, len(tokens), element.page))
                continue
            for piece in self._split_large(element.text, tokens):
                section.units.append(_Unit(piece, self.count_tokens(piece), element.page))
        if section.units:
            yield section

    def _split_large(self, text: str, tokens: Sequence[int] | None = None) -> list[str]:
        """Cut an element larger than max_tokens into overlapping windows (``tokens``: its
        tokens, when the caller has them)."""
        size, overlap = self._settings.max_tokens, self._settings.overlap_tokens
        if tokens is None:
            tokens = self.encoding.encode_ordinary(text)
        if len(tokens) <= size:
            return [text]
        pieces: list[str] = []
        start = 0
        while start < len(tokens):
            end = self._boundary(tokens, min(start + size, len(tokens)), start)
            pieces.append(self.encoding.decode(tokens[start:end]).strip())
            if end >= len(tokens):
                break
            start = max(self._boundary(tokens, end - overlap, start), start + 1)
        return [p for p in pieces if p]

    def _boundary(self, tokens: Sequence[int], cut: int, floor: int) -> int:
        """Move ``cut`` back so it does not fall inside a multi-byte UTF-8 character."""
        while floor < cut < len(tokens):
            if not self._continues_char(tokens[cut]):
                return cut
            cut -= 1
        return cut if cut > floor else min(floor + 1, len(tokens))

    def _continues_char(self, token: int) -> bool:
        """True if the token starts inside a UTF-8 character (a continuation byte)."""
        first = self.encoding.decode_single_token_bytes(token)[:1]
        return bool(first) and (first[0] & 0xC0) == 0x80

    def _pack(self, section: _Section) -> Iterator[tuple[str, int | None, int | None]]:
        """The chunks of a section: text, page, and tokens where known without encoding (a
        chunk of one unit has that unit's)."""
        size, overlap = self._settings.max_tokens, self._settings.overlap_tokens
        current: list[_Unit] = []
        used = 0
        fresh = 0  # units in `current` that no earlier chunk emitted
        for unit in section.units:
            cost = unit.tokens + (1 if current else 0)
            if current and used + cost > size:
                yield _join(current)
                current = self._tail(current, overlap, budget=size - unit.tokens - 1)
                used = sum(u.tokens for u in current) + max(len(current) - 1, 0)
                fresh = 0
                cost = unit.tokens + (1 if current else 0)
            current.append(unit)
            used += cost
            fresh += 1
        if current and fresh:
            yield _join(current)

    def _tail(self, units: list[_Unit], overlap: int, budget: int) -> list[_Unit]:
        """The trailing context (at most ``overlap`` tokens) the next chunk starts with."""
        limit = min(overlap, budget)
        if limit <= 0:
            return []
        last = units[-1]
        if last.tokens <= limit:
            return [last]
        tokens = self.encoding.encode_ordinary(last.text)
        start = len(tokens) - limit
        while start < len(tokens) and self._continues_char(tokens[start]):
            start += 1
        text = self.encoding.decode(tokens[start:]).strip()
        return [_Unit(text, self.count_tokens(text), last.page)] if text else []


def _join(units: list[_Unit]) -> tuple[str, int | None, int | None]:
    page = next((u.page for u in units if u.page is not None), None)
    if len(units) == 1:
        return units[0].text, page, units[0].tokens
    return _SEPARATOR.join(u.text for u in units), page, None


def _chunk_metadata(document: SourceDocument) -> dict[str, MetadataValue]:
    """What every chunk of ``document`` carries for filters and citations: the connector's
    metadata (deep ``link``, sidecar ``attr.*`` attributes, ...), the MIME type, and the
    modification time (ISO 8601, UTC)."""
    metadata: dict[str, MetadataValue] = dict(document.metadata)
    metadata["mime_type"] = document.mime_type
    metadata["modified"] = document.modified_at.astimezone(UTC).isoformat()
    return metadata
