"""Linear-time parsers for plain text, Markdown and HTML, producing ``unstructured``'s elements.

``unstructured``'s text partitioners classify every paragraph with spaCy (is there a verb? is it a
title?) and run at about 20-30 KB/s here: a 49 MB text file would take most of an hour. These
parsers keep the element types the chunker relies on (``Title`` starts a section, ``ListItem``,
``NarrativeText``, ``Table``, ``CodeSnippet``, ``UncategorizedText``) with the same shape-based
rules ``unstructured`` applies before its language model (short unpunctuated lines are titles,
bullets are list items), at several MB/s: a regex pass over lines for text and Markdown, and
lxml's C parser for HTML. Each returns the document's own title where the format has one (an HTML
``<title>``), which becomes the citation title.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

_BULLET: Final = re.compile(r"^\s*(?:[-*+•◦▪‣]|\(?\d{1,3}[.)]|\(?[a-zA-Z][.)])\s+(?=\S)")
_HEADING: Final = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_SETEXT: Final = re.compile(r"^ {0,3}(=+|-+)\s*$")
_FENCE: Final = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_TABLE_RULE: Final = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_MD_INLINE: Final = re.compile(
    r"!?\[([^\]]*)\]\([^)]*\)|`+|(?<!\w)[*_]{1,3}(?=\S)|(?<=\S)[*_]{1,3}(?!\w)"
)
_SENTENCE_END: Final = (".", "!", "?", ";", ":", ",", '."', ".'", ".)")
_TITLE_MAX_WORDS: Final = 12


@dataclass(frozen=True, slots=True)
class Block:
    """One element: its ``unstructured`` category and its text."""

    category: str
    text: str


def classify(text: str) -> str:
    """``Title``, ``NarrativeText`` or ``UncategorizedText`` for one paragraph, by its shape:
    the checks ``unstructured`` runs before its language model, without the model."""
    words = text.split()
    if not words or not any(c.isalpha() for c in text):
        return "UncategorizedText"
    if (
        len(words) <= _TITLE_MAX_WORDS
        and "\n" not in text.strip()
        and not text.rstrip().endswith(_SENTENCE_END)
    ):
        return "Title"
    if len(words) >= 3:
        return "NarrativeText"
    return "UncategorizedText"


def parse_text(text: str) -> list[Block]:
    """Paragraphs split on blank lines; bullet lines become list items."""
    out: list[Block] = []
    for paragraph in _paragraphs(text.splitlines()):
        out.extend(_paragraph_blocks(paragraph))
    return out


def _paragraphs(lines: list[str]) -> Iterator[list[str]]:
    current: list[str] = []
    for line in lines:
        if line.strip():
            current.append(line)
        elif current:
            yield current
            current = []
    if current:
        yield current


def _paragraph_blocks(lines: list[str]) -> Iterator[Block]:
    if any(_BULLET.match(line) for line in lines):
        item: list[str] = []
        for line in lines:
            if _BULLET.match(line) and item:
                yield Block("ListItem", " ".join(item))
                item = []
            item.append(_BULLET.sub("", line, count=1).strip() if not item else line.strip())
        if item:
            yield Block("ListItem", " ".join(item))
        return
    text = " ".join(line.strip() for line in lines)
    yield Block(classify(text), text)


def parse_markdown(text: str) -> list[Block]:
    """ATX and setext headings are titles; fenced code is a code snippet; pipe tables are
    tables; lists and paragraphs as in plain text. Inline markup is dropped, link text kept."""
    out: list[Block] = []
    lines = text.splitlines()
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            for block in _paragraph_blocks([_inline(line) for line in paragraph]):
                out.append(block if block.category == "ListItem" else _md_paragraph(block))
            paragraph.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence:
            flush()
            marker, body = fence.group(1), []
            i += 1
            while i < len(lines) and not lines[i].lstrip().startswith(marker):
                body.append(lines[i])
                i += 1
            code = "\n".join(body).strip()
            if code:
                out.append(Block("CodeSnippet", code))
        elif heading := _HEADING.match(line):
            flush()
            if title := _inline(heading.group(2)).strip():
                out.append(Block("Title", title))
        elif paragraph and len(paragraph) == 1 and _SETEXT.match(line) and line.strip():
            title = _inline(paragraph[0]).strip()
            paragraph.clear()
            out.append(Block("Title", title))
        elif "|" in line and i + 1 < len(lines) and _TABLE_RULE.match(lines[i + 1]):
            flush()
            rows = [line]
            i += 2
            while i < len(lines) and "|" in lines[i] and lines[i].strip():
                rows.append(lines[i])
                i += 1
            cells = [" ".join(c.strip() for c in r.strip().strip("|").split("|")) for r in rows]
            out.append(Block("Table", _inline("\n".join(cells))))
            continue
        elif line.strip():
            paragraph.append(line)
        else:
            flush()
        i += 1
    flush()
    return out


def _md_paragraph(block: Block) -> Block:
    # In Markdown, a heading is marked up: an unmarked short line is body text, not a title.
    return Block("NarrativeText" if block.category == "Title" else block.category, block.text)


def _inline(text: str) -> str:
    if "[" not in text and "*" not in text and "_" not in text and "`" not in text:
        return text
    return _MD_INLINE.sub(_link_text, text)


def _link_text(match: re.Match[str]) -> str:
    return match.group(1) or ""


_HTML_BLOCKS: Final = {
    **{f"h{n}": "Title" for n in range(1, 7)},
    "li": "ListItem",
    "dt": "ListItem",
    "pre": "CodeSnippet",
    "table": "Table",
    "blockquote": "NarrativeText",
    "p": "NarrativeText",
    "caption": "Title",
}
_HTML_SKIP: Final = frozenset({"script", "style", "noscript", "template", "head", "svg", "nav"})


def parse_html(data: bytes) -> tuple[list[Block], str | None]:
    """Headings are titles, ``li`` list items, ``table`` tables, ``pre`` code, paragraphs
    narrative text; loose text in ``div``s and the like is classified by shape. Returns the
    blocks and the ``<title>``."""
    import lxml.html
    from lxml import etree

    try:
        root = lxml.html.document_fromstring(data)
    except (etree.ParserError, ValueError):
        return [], None
    title_el = root.find(".//title")
    title = " ".join(title_el.text_content().split()) if title_el is not None else None
    out: list[Block] = []
    body = root.find("body")
    _walk_html(body if body is not None else root, out)
    return out, title or None


def _walk_html(element: object, out: list[Block]) -> None:
    from lxml import etree

    loose: list[str] = []

    def flush() -> None:
        text = " ".join(" ".join(loose).split())
        loose.clear()
        if text:
            out.append(Block(classify(text), text))

    el = element
    if getattr(el, "text", None):
        loose.append(el.text)  # type: ignore[attr-defined]
    for child in el:  # type: ignore[attr-defined]
        tag = child.tag if isinstance(child.tag, str) else ""
        tag = tag.lower()
        if tag in _HTML_SKIP or isinstance(child, etree._Comment):
            pass
        elif tag in _HTML_BLOCKS:
            flush()
            category = _HTML_BLOCKS[tag]
            if category == "Table":
                rows = [
                    " ".join(" ".join(c.text_content().split()) for c in r)
                    for r in child.iter("tr")
                ]
                text = "\n".join(r for r in rows if r.strip())
            elif category == "CodeSnippet":
                text = child.text_content().strip()
            elif category == "ListItem" and any(
                isinstance(c.tag, str) and c.tag.lower() in ("ul", "ol", "p", "div") for c in child
            ):
                _walk_html(child, out)  # a list item holding blocks: descend
                text = ""
            else:
                text = " ".join(child.text_content().split())
            if text:
                if category == "NarrativeText":
                    category = (
                        "NarrativeText"
                        if classify(text) != "UncategorizedText"
                        else "UncategorizedText"
                    )
                out.append(Block(category, text))
        elif tag in ("br", "hr"):
            flush()
        elif tag in (
            "span",
            "a",
            "b",
            "i",
            "em",
            "strong",
            "code",
            "small",
            "sup",
            "sub",
            "u",
            "mark",
            "abbr",
            "time",
            "label",
            "font",
        ):
            loose.append(child.text_content())
        else:
            flush()
            _walk_html(child, out)
        if child.tail and child.tail.strip():
            loose.append(child.tail)
    flush()
