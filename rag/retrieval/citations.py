"""Citations: where each returned chunk came from, with a stable deep link into its source."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from rag.models import Chunk

LINK_SCHEMES = frozenset({"http", "https", "s3", "file"})
"""The schemes a ``link`` may have; any other (``javascript:``, ``data:``) is not a link a chat
app should render, and the chunk's URI stands in for it."""


@dataclass(frozen=True)
class Reference:
    """A chunk's citation: its document, where in it, and a link to open it.

    ``link`` is the deep link a connector set in the chunk's metadata (``s3://bucket/key``, a
    SharePoint ``webUrl``), or the document's URI (a folder source's file path) when there is
    none or it is not a link (see :data:`LINK_SCHEMES`).
    """

    chunk_id: str
    document_id: str
    source: str
    uri: str
    title: str
    section: str | None
    page: int | None
    ordinal: int
    link: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def cite(chunk: Chunk) -> Reference:
    """The :class:`Reference` of one chunk."""
    citation = chunk.citation
    return Reference(
        chunk_id=chunk.id,
        document_id=chunk.document_id,
        source=chunk.source,
        uri=citation.uri,
        title=citation.title,
        section=citation.section,
        page=citation.page,
        ordinal=chunk.ordinal,
        link=link_of(chunk),
    )


def link_of(chunk: Chunk) -> str:
    """The chunk's deep link: metadata ``link`` when it is one, else the document's URI."""
    link = chunk.metadata.get("link")
    if isinstance(link, str) and _is_link(link):
        return link
    return chunk.citation.uri


def _is_link(value: str) -> bool:
    if not value.strip() or any(ord(c) < 32 for c in value):
        return False
    scheme = urlsplit(value).scheme.lower()
    return scheme in LINK_SCHEMES or (scheme == "" and not value.startswith("//"))
