"""Writes the demo corpus (rag/demo/corpus): a fictional company, Kestrel Dynamics.

Run with the dev dependencies (python-docx, python-pptx): ``python scripts/build_demo_corpus.py``.
The output is committed, so users never need to run this.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import docx
import pptx

ROOT = Path(__file__).resolve().parents[1] / "rag" / "demo" / "corpus"


def pdf(lines: list[str]) -> bytes:
    """A minimal, valid single-page PDF with one text line per entry (Helvetica)."""
    ops = ["BT /F1 11 Tf 72 740 Td 14 TL"]
    for line in lines:
        escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        ops.append(f"({escaped}) Tj T*")
    ops.append("ET")
    stream = "\n".join(ops).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return bytes(out)


def write(rel: str, content: str | bytes) -> Path:
    path = ROOT / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, "utf-8")
    return path


def build() -> None:
    shutil.rmtree(ROOT, ignore_errors=True)

    # -- public: everyone ------------------------------------------------------------------
    write("public/.rag-acl.toml", "public = true\n")
    write(
        "public/company-overview.md",
        """# Kestrel Dynamics at a glance

Kestrel Dynamics builds autonomous inspection drones for wind farms and bridges. The company was
founded in 2017 in Rotterdam and has 240 employees in three offices: Rotterdam, Austin and Pune.

## Products

The Kestrel K2 drone inspects wind turbine blades in under twelve minutes. The Harrier platform
analyses the inspection footage and flags cracks, erosion and lightning damage.

## Contact

Press enquiries go to press@kestrel.example. Customer support is open on weekdays from 8:00 to
18:00 CET.
""",
    )
    write(
        "public/office-guide.txt",
        """Office guide

The Rotterdam office is open from 7:00 to 20:00 on weekdays. Visitors sign in at the front desk
and wear a badge at all times.

Bicycles go in the basement storage; the entrance is on the Maaskade side of the building.
""",
    )
    write(
        "public/holiday-calendar.html",
        """<html><head><title>Holiday calendar</title></head>
<body><h1>Company holidays 2026</h1>
<p>All offices close on New Year's Day, King's Day, Christmas Day and Boxing Day.</p>
<p>Each office adds its own national holidays; the Austin office closes on Thanksgiving.</p>
</body></html>
""",
    )

    # -- hr: the HR group; the handbook for all employees; salary bands deny mallory ---------
    write(
        "hr/.rag-acl.toml",
        """allow = ["group:hr"]

[files."employee-handbook.docx"]
allow = ["group:employees"]

[files."salary-bands.md"]
deny = ["user:mallory"]
""",
    )
    handbook = docx.Document()
    handbook.add_heading("Employee handbook", 1)
    handbook.add_heading("Paid leave", 2)
    handbook.add_paragraph(
        "Every employee receives 27 days of paid vacation per year, plus the company holidays. "
        "Unused vacation days carry over for one year. Parental leave is 16 weeks at full pay."
    )
    handbook.add_heading("Remote work", 2)
    handbook.add_paragraph(
        "Employees may work remotely up to three days a week after agreeing it with their manager. "
        "The company pays a home office allowance of 600 euros once."
    )
    path = ROOT / "hr" / "employee-handbook.docx"
    handbook.save(path)
    write(
        "hr/salary-bands.md",
        """# Salary bands 2026

## Engineering

A senior software engineer earns between 82,000 and 104,000 euros per year. A staff engineer earns
between 105,000 and 128,000 euros per year.

## Operations

A drone pilot earns between 48,000 and 61,000 euros per year, plus a field allowance.
""",
    )
    write(
        "hr/performance-review-policy.pdf",
        pdf(
            [
                "Performance review policy",
                "Reviews happen twice a year, in March and in September.",
                "Each employee writes a self assessment before meeting their manager.",
                "Ratings are calibrated across teams by the HR business partners.",
            ]
        ),
    )

    # -- finance: the finance group; the forecast mail also for the CEO ---------------------
    write(
        "finance/.rag-acl.toml",
        """allow = ["group:finance"]

[files."q3-forecast.eml"]
allow = ["user:ceo"]
""",
    )
    deck = pptx.Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[1])
    slide.shapes.title.text = "Q3 budget"
    slide.placeholders[1].text = (
        "The Q3 research and development budget is 4.2 million euros, of which 1.1 million euros "
        "goes to the Harrier analytics platform."
    )
    slide = deck.slides.add_slide(deck.slide_layouts[1])
    slide.shapes.title.text = "Hiring plan"
    slide.placeholders[1].text = "Finance approved 18 new hires in Q3, 11 of them in engineering."
    deck.save(ROOT / "finance" / "q3-budget.pptx")
    write(
        "finance/q3-forecast.eml",
        """From: cfo@kestrel.example
To: ceo@kestrel.example
Subject: Q3 revenue forecast
Date: Mon, 6 Jul 2026 09:12:00 +0200
Content-Type: text/plain; charset=utf-8

Revenue for Q3 is forecast at 9.8 million euros, up 14 percent on last year. The largest
contract is the North Sea wind farm inspection for 2.3 million euros.
""",
    )

    # -- engineering ------------------------------------------------------------------------
    write("engineering/.rag-acl.toml", 'allow = ["group:engineering"]\n')
    write(
        "engineering/architecture.md",
        """# Harrier architecture

Harrier ingests inspection footage into object storage, runs the crack detection model on GPU
workers, and stores findings in PostgreSQL. Results reach customers through the portal API.

## Deployment

Every service runs on Kubernetes. Releases go out on Tuesdays and Thursdays behind feature flags.
""",
    )
    write(
        "engineering/incident-postmortem.pdf",
        pdf(
            [
                "Postmortem: payment service outage on 12 May",
                "The payment service was down for 47 minutes because an expired TLS certificate",
                "broke the connection to the payment provider.",
                "Action items: automate certificate renewal and alert 30 days before expiry.",
            ]
        ),
    )

    # -- files that cannot be ingested, to show the quarantine ------------------------------
    write("engineering/scanned-whiteboard.pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<")
    write("drafts/untitled.txt", "A draft nobody set permissions for. It must never be indexed.\n")


if __name__ == "__main__":
    build()
    print(f"wrote {sum(1 for p in ROOT.rglob('*') if p.is_file())} files under {ROOT}")  # noqa: T201
