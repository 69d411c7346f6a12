from __future__ import annotations

import io
import os

import pytest

from rag.config import ParsingSettings
from rag.errors import (
    DocumentTooLargeError,
    EmptyDocumentError,
    EncryptedDocumentError,
    ParseError,
    UnsupportedFormatError,
)
from rag.parsing import parse
from rag.textdecode import decode_text

SETTINGS = ParsingSettings()
TEXT = (
    "Café crème and naïve façade: the über-résumé costs 5 €.\n\n"
    "Second paragraph of narrative text here."
)


@pytest.mark.parametrize(
    "encoding", ["utf-8", "utf-8-sig", "cp1252", "latin-1", "utf-16", "utf-16-le"]
)
def test_text_in_many_encodings_decodes(encoding: str) -> None:
    text = TEXT if encoding != "latin-1" else TEXT.replace("€", "EUR")
    data = text.encode(encoding)
    if encoding == "utf-16-le":
        data = "\ufeff".encode("utf-16-le") + data
    assert decode_text(data) == text
    elements = parse(data, "note.txt", SETTINGS)
    assert "crème" in " ".join(e.text for e in elements)


def test_random_bytes_as_text_is_undecodable() -> None:
    with pytest.raises(ParseError, match="undecodable"):
        parse(bytes(range(0, 32)) * 50, "x.txt", SETTINGS)


def test_random_bytes_named_docx_is_a_parse_error() -> None:
    with pytest.raises(ParseError):
        parse(os.urandom(2048), "report.docx", SETTINGS)


def test_zip_that_is_not_docx_is_a_parse_error() -> None:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("hello.txt", "not a word document")
    with pytest.raises(ParseError):
        parse(buf.getvalue(), "fake.docx", SETTINGS)


def test_password_protected_office_file_is_encrypted() -> None:
    data = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + os.urandom(1000)
    with pytest.raises(EncryptedDocumentError):
        parse(data, "secret.docx", SETTINGS)


def test_corrupt_pdf_is_a_parse_error() -> None:
    with pytest.raises((ParseError, EmptyDocumentError)):
        parse(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<", "broken.pdf", SETTINGS)


def test_pdf_without_header_is_a_parse_error() -> None:
    with pytest.raises(ParseError):
        parse(b"this is not a pdf at all" * 10, "x.pdf", SETTINGS)


def test_encrypted_pdf_is_detected() -> None:
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(200, 200)
    writer.encrypt("secret")
    buf = io.BytesIO()
    writer.write(buf)
    with pytest.raises(EncryptedDocumentError):
        parse(buf.getvalue(), "locked.pdf", SETTINGS)


def test_pdf_text_is_extracted_with_pages() -> None:
    from scripts.build_demo_corpus import pdf

    elements = parse(
        pdf(["Quarterly report", "Revenue grew by ten percent this year."]), "r.pdf", SETTINGS
    )
    assert any("Revenue grew" in e.text for e in elements)
    assert {e.page for e in elements} == {1}


def test_empty_file() -> None:
    with pytest.raises(EmptyDocumentError):
        parse(b"", "empty.md", SETTINGS)
    with pytest.raises(EmptyDocumentError):
        parse(b"  \n\n ", "blank.txt", SETTINGS)


def test_html_with_no_text_is_empty() -> None:
    with pytest.raises(EmptyDocumentError):
        parse(b"<html><body><img src='x.png'></body></html>", "x.html", SETTINGS)


def test_too_large() -> None:
    with pytest.raises(DocumentTooLargeError):
        parse(b"x" * 101, "big.txt", ParsingSettings(max_file_bytes=100))


def test_unsupported_extension() -> None:
    with pytest.raises(UnsupportedFormatError):
        parse(b"\x89PNG....", "image.png", SETTINGS)


def test_structure_markdown_docx_pptx_email() -> None:
    import docx
    import pptx

    md = parse(
        b"# Title\n\nA paragraph that is long enough to be narrative text.\n", "a.md", SETTINGS
    )
    assert md[0].is_title and md[0].text == "Title"

    d = docx.Document()
    d.add_heading("Handbook", 1)
    d.add_paragraph("Employees get 25 days of paid leave per year.")
    buf = io.BytesIO()
    d.save(buf)
    elements = parse(buf.getvalue(), "h.docx", SETTINGS)
    assert elements[0].is_title and "25 days" in elements[1].text

    p = pptx.Presentation()
    slide = p.slides.add_slide(p.slide_layouts[1])
    slide.shapes.title.text = "Roadmap"
    slide.placeholders[1].text = "Ship the vector store in Q3."
    buf = io.BytesIO()
    p.save(buf)
    assert [e.text for e in parse(buf.getvalue(), "r.pptx", SETTINGS)] == [
        "Roadmap",
        "Ship the vector store in Q3.",
    ]

    mail = (
        b"From: a@b.example\nTo: c@d.example\nSubject: Budget\n"
        b"Content-Type: text/plain\n\nThe budget for Q3 is approved.\n"
    )
    assert "approved" in parse(mail, "m.eml", SETTINGS)[0].text


_PDF_TEXTS = (
    "Quarterly report",
    "QUARTERLY REPORT.",
    "1. Scope of the audit",
    "• Renew the vendor contract",
    "- Renew the vendor contract",
    "ops@example.com",
    "Doylestown, PA 18901",
    "Revenue grew by ten percent this year.",
    "Revenue grew. Costs fell. Margins rose. Hiring stopped.",
    "Dear Friends,",
    "2026",
    "The budget review for the third quarter shows that revenue grew faster than the forecast "
    "and that every region met its target, so the plan stays as it is.",
    "Budget Review Quarterly Forecast Revenue Pipeline Customer Contract Renewal Incident",
    "----- BREAK -----",
)


@pytest.mark.parametrize("text", _PDF_TEXTS)
def test_pdf_text_boxes_keep_unstructureds_titles_and_texts(text: str) -> None:
    """The PDF text layer skips spaCy where it cannot make a title, and changes nothing else."""
    from unstructured.partition.text import element_from_text

    from rag.parsing import _classify_pdf_text, _unstructured

    _unstructured()
    ours, theirs = _classify_pdf_text(text), element_from_text(text)
    assert ours.text == theirs.text
    assert (ours.category == "Title") == (theirs.category == "Title")
    if theirs.category not in ("NarrativeText", "Text"):
        assert ours.category == theirs.category


def test_docx_body_paragraphs_skip_only_the_narrative_check() -> None:
    """Our .docx elements are unstructured's, but for NarrativeText/Text (spaCy, unused); other
    callers of unstructured in the process keep its full classification."""
    import docx
    from unstructured.partition.docx import partition_docx

    d = docx.Document()
    d.add_heading("Handbook", 1)
    d.add_paragraph("Employees get 25 days of paid leave per year.")
    d.add_paragraph("Short Line Here")
    d.add_paragraph("Renew the contract", style="List Bullet")
    d.add_heading("Travel", 2)
    d.add_paragraph("Book trains through the portal. Flights need approval.")
    buf = io.BytesIO()
    d.save(buf)
    ours = parse(buf.getvalue(), "h.docx", SETTINGS)
    theirs = [e for e in partition_docx(file=io.BytesIO(buf.getvalue())) if e.text.strip()]
    assert [(e.text, e.is_title) for e in ours] == [
        (e.text.strip(), e.category == "Title") for e in theirs
    ]
    assert "NarrativeText" in {e.category for e in theirs}  # the full check outside our parse
    assert "NarrativeText" not in {e.category for e in ours}
