"""The linear-time text, Markdown and HTML parsers keep unstructured's element types."""

from __future__ import annotations

import io
import zipfile

import pytest

from rag.config import ParsingSettings
from rag.errors import EmptyDocumentError, ParseTimeoutError
from rag.fastparse import classify, parse_html, parse_markdown, parse_text
from rag.parsing import parse, parse_document

TEXT = """Quarterly Planning Guide

This guide explains how each team prepares its quarterly plan. Plans are due in the second week.

- Draft the goals with your manager
- Share them with the team
  before the review

Budget Review

Finance reviews every plan. Questions go to the finance channel.
"""


def categories(elements: list[tuple[str, str]]) -> list[str]:
    return [c for c, _ in elements]


def test_plain_text_titles_lists_and_narrative() -> None:
    blocks = [(b.category, b.text) for b in parse_text(TEXT)]
    assert blocks == [
        ("Title", "Quarterly Planning Guide"),
        (
            "NarrativeText",
            "This guide explains how each team prepares its quarterly plan. "
            "Plans are due in the second week.",
        ),
        ("ListItem", "Draft the goals with your manager"),
        ("ListItem", "Share them with the team before the review"),
        ("Title", "Budget Review"),
        ("NarrativeText", "Finance reviews every plan. Questions go to the finance channel."),
    ]


@pytest.mark.slow
def test_same_element_types_as_unstructured() -> None:
    fast = parse(TEXT.encode(), "guide.txt", ParsingSettings())
    slow = parse(TEXT.encode(), "guide.txt", ParsingSettings(text_parser="unstructured"))
    assert [(e.category, e.text) for e in fast] == [(e.category, e.text) for e in slow]


def test_markdown_structure() -> None:
    md = (
        "# Handbook\n\nSome *intro* text with a [link](http://x) here.\n\n"
        "Setext Title\n------------\n\n"
        "```python\nprint('hi')\n```\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n\n"
        "1. first step\n2. second step\n\nshort line\n"
    )
    blocks = [(b.category, b.text) for b in parse_markdown(md)]
    assert blocks == [
        ("Title", "Handbook"),
        ("NarrativeText", "Some intro text with a link here."),
        ("Title", "Setext Title"),
        ("CodeSnippet", "print('hi')"),
        ("Table", "a b\n1 2"),
        ("ListItem", "first step"),
        ("ListItem", "second step"),
        ("NarrativeText", "short line"),  # not marked up as a heading: body text
    ]


def test_markdown_keeps_intraword_underscores() -> None:
    blocks = parse_markdown("Set the variable max_file_bytes to raise the limit for uploads.\n")
    assert blocks[0].text == "Set the variable max_file_bytes to raise the limit for uploads."


def test_html_blocks_and_title() -> None:
    html = (
        b"<html><head><title> Holiday  Calendar </title><style>p{}</style></head><body>"
        b"<nav>Home | About</nav><h1>Holidays 2026</h1><p>The office closes on these days.</p>"
        b"<ul><li>New Year</li><li>Labour <b>Day</b></li></ul>"
        b"<table><tr><th>Day</th><th>Date</th></tr><tr><td>New Year</td><td>Jan 1</td></tr>"
        b"</table><div>Loose text in a div that reads like a sentence.</div>"
        b"<script>var x = 1;</script></body></html>"
    )
    blocks, title = parse_html(html)
    assert title == "Holiday Calendar"
    assert [(b.category, b.text) for b in blocks] == [
        ("Title", "Holidays 2026"),
        ("NarrativeText", "The office closes on these days."),
        ("ListItem", "New Year"),
        ("ListItem", "Labour Day"),
        ("Table", "Day Date\nNew Year Jan 1"),
        ("NarrativeText", "Loose text in a div that reads like a sentence."),
    ]
    parsed = parse_document(html, "cal.html", ParsingSettings())
    assert parsed.title == "Holiday Calendar"


def test_office_core_title_becomes_the_title(tmp_path: object) -> None:
    docx = pytest.importorskip("docx")
    document = docx.Document()
    document.core_properties.title = "Employee Handbook 2026"
    document.add_paragraph("Welcome to the company. Read this handbook carefully.")
    buffer = io.BytesIO()
    document.save(buffer)
    parsed = parse_document(buffer.getvalue(), "handbook.docx", ParsingSettings())
    assert parsed.title == "Employee Handbook 2026"
    with zipfile.ZipFile(buffer) as archive:
        assert "docProps/core.xml" in archive.namelist()


def test_classify_by_shape() -> None:
    assert classify("Budget Review") == "Title"
    assert classify("This is a sentence.") == "NarrativeText"
    assert classify("12 345") == "UncategorizedText"
    assert classify("Ends with a colon:") != "Title"


def test_markup_only_html_is_empty() -> None:
    with pytest.raises(EmptyDocumentError):
        parse(b"<html><body><script>x()</script></body></html>", "x.html", ParsingSettings())


def test_parsing_past_its_budget_is_a_parse_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    import rag.parsing

    def slow(data: bytes) -> list[object]:  # a parser stuck on one document
        time.sleep(5)
        return []

    monkeypatch.setitem(rag.parsing._HANDLERS, "text/plain", slow)
    settings = ParsingSettings(
        text_parser="unstructured", seconds_per_mb=0.001, min_timeout_seconds=0.05
    )
    assert threading.current_thread() is threading.main_thread()
    with pytest.raises(ParseTimeoutError, match="budget"):
        parse(b"A paragraph.\n", "big.txt", settings)


def test_large_text_parses_linearly() -> None:
    # 5 MB in one call: the fast path has no per-paragraph model call (this would take minutes
    # with unstructured's partition_text); time is measured by `python -m bench parsing`.
    para = "Paragraph of text about the quarterly budget and its review process. " * 4
    data = (("Heading\n\n" + para + "\n\n") * 16_000).encode()
    elements = parse(data, "big.txt", ParsingSettings())
    assert len(elements) == 32_000


def test_an_outer_alarm_deadline_survives_parsing() -> None:
    import signal

    fired: list[int] = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(signum))
    try:
        signal.setitimer(signal.ITIMER_REAL, 120.0)  # e.g. Airflow's execution_timeout
        parse(b"Budget Review\n\nThe plan is due next week.\n", "a.txt", ParsingSettings())
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 100.0 < left <= 120.0  # still armed with (about) its remaining time
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert fired == []
