"""Incremental sync on a corpus of a few thousand documents (embedded store, real model):
first ingest, re-sync with nothing changed, after changing the ACLs of 10% of the documents,
and after editing 1% of them. Ratios are against the first ingest, measured in the same run."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from connectors.filesystem import FilesystemConnector
from rag.config import Settings
from rag.pipeline import IngestSummary, ingest

WORDS = [
    "turbine",
    "blade",
    "inspection",
    "drone",
    "erosion",
    "crack",
    "lightning",
    "footage",
    "analysis",
    "model",
    "bridge",
    "cable",
    "corrosion",
    "report",
    "customer",
    "contract",
    "budget",
    "forecast",
    "hiring",
    "policy",
]


def _write_corpus(root: Path, docs: int) -> None:
    for team in range(10):
        folder = root / f"team-{team}"
        folder.mkdir(parents=True)
        (folder / ".rag-acl.toml").write_text(f'allow = ["group:team-{team}"]\n')
    for i in range(docs):
        paragraphs = []
        for p in range(4):
            words = [WORDS[(i * 7 + p * 3 + j * j) % len(WORDS)] for j in range(45)]
            paragraphs.append(f"Note {i}, part {p}: " + " ".join(words) + ".")
        text = f"# Field note {i}\n\n" + "\n\n".join(paragraphs) + "\n"
        (root / f"team-{i % 10}" / f"note-{i:05d}.md").write_text(text)


def _run(root: Path, settings: Settings) -> tuple[IngestSummary, float]:
    start = time.perf_counter()
    summary = ingest(FilesystemConnector(root, "bench"), settings)
    return summary, time.perf_counter() - start


def run(docs: int = 2000) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "src"
        _write_corpus(root, docs)
        settings = Settings(data_dir=Path(tmp) / "data")
        print(f"\n== Incremental sync: {docs:,} markdown documents, LanceDB, all-MiniLM-L6-v2")
        print(
            f"{'run':<34}{'seconds':>9}{'x first':>9}{'changed':>9}{'acl-only':>9}"
            f"{'emb calls':>10}{'emb texts':>10}{'chunks':>8}"
        )
        results = []
        first, t_first = _run(root, settings)
        results.append(("first ingest", first, t_first))
        results.append(("re-sync, nothing changed", *_run(root, settings)))
        # 10% of documents: one of ten teams' folders gets an extra group
        (root / "team-0" / ".rag-acl.toml").write_text('allow = ["group:team-0", "group:audit"]\n')
        results.append(("re-sync, ACLs of 10% changed", *_run(root, settings)))
        edited = sorted(root.glob("team-*/note-*.md"))[::100]  # 1% of documents
        for path in edited:
            path.write_text(path.read_text() + "\nAn added paragraph with new findings.\n")
        summary, seconds = _run(root, settings)
        results.append((f"re-sync, {len(edited)} docs (1%) edited", summary, seconds))
        for name, s, seconds in results:
            print(
                f"{name:<34}{seconds:>9.2f}{seconds / t_first:>9.3f}{s.changed + s.new:>9}"
                f"{s.acl_only:>9}{s.embedding_calls:>10}{s.embedded_texts:>10}{s.chunks:>8}"
            )
