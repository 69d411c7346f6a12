"""End-to-end ingestion: this pipeline against the LangChain baseline a new user writes, on the
same corpus, the same embedder, the same OpenSearch node, in one run
(``python -m bench ingest_compare -- [--docs 2000] [--embedder hash minilm] ...``).

The corpus is generated deterministically: ``.txt``, ``.md``, ``.html``, ``.docx`` and ``.pdf``
files of 1-30 KB of text (log-uniform), in department folders with ``.rag-acl.toml`` policies
(group allow lists, a deny, per-file overrides, a public folder).

- **ours**: ``rag.pipeline.ingest`` over the filesystem connector into the OpenSearch store, as
  shipped (fast text/Markdown/HTML parsers, unstructured for Office, the PDF text layer; 200-token
  chunks with 32 tokens of overlap; the embedding cache, cold; sync state and run records in
  OpenSearch). Its stages come from ``IngestSummary.seconds``.
- **langchain**: ``DirectoryLoader`` per file type with the tutorial loaders (``per-type``:
  ``TextLoader`` for .txt and .md, ``BSHTMLLoader``, ``Docx2txtLoader`` — or
  ``UnstructuredWordDocumentLoader`` where docx2txt is not installed — and ``PyPDFLoader``), or
  ``DirectoryLoader``'s default ``UnstructuredFileLoader`` (``unstructured``; PDFs still through
  ``PyPDFLoader``, as unstructured's PDF extra is not installed); then
  ``RecursiveCharacterTextSplitter.from_tiktoken_encoder`` (cl100k_base, 200/32) and
  ``OpenSearchVectorSearch.add_texts`` in batches of its default ``bulk_size`` (500; it refuses
  more per call), which is ``embed_documents`` then a bulk request and a refresh. The bench calls
  those two halves separately (``embed_documents``, then ``add_embeddings``) to time them; the
  HNSW parameters match ours (lucene engine, cosine, m=16, ef_construction=128) so the node does
  the same indexing work. The baseline carries no ACLs.

Both sides get the same embedder instance (wrapped as a LangChain ``Embeddings`` for the
baseline, called in batches of ``embedding.batch_size`` like ours). A small warm-up corpus runs
through both first, untimed (model load, imports, JIT of the node). With ``--repeats``, every
repeat runs each pipeline once, in turn (a machine that slows down mid-run weighs on all alike),
and each one's median run is kept. ``--reference TREE`` also runs ``rag.pipeline.ingest`` from
another source tree (a checkout of an earlier commit) in a subprocess of its own, warmed up the
same way, in the same turns: before and after a change, in one run, on one node.

The tutorial Word loader needs ``docx2txt`` (a dev dependency): without it the baseline parses
.docx with unstructured (spaCy heuristics, ~0.3 s a file), which flatters ours. The loader used
is printed. Each embedder named by
``--embedder`` is a full comparison: ``hash`` (cheap, so the other stages show) and ``minilm``
(the offline model; on a small CPU it bounds both sides, hence ``--minilm-docs``).

Printed per embedder: documents, chunks, wall seconds, docs/s and chunks/s of each run, their
ratio to the first ``--loaders`` variant, and each run's seconds per stage (ours: list, revoke,
read, parse — split by file type —, chunk (tokenizing), embed, load (bulk, stale-chunk deletes,
sync state), index; the baseline: load — split by loader —, split, embed, index), the time
outside any stage, and the stage that bounds the run.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import io
import json
import math
import os
import pstats
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePath
from typing import Any

from bench.common import SCRIPT

# -- the corpus ------------------------------------------------------------------------------

_VOCABULARY = (
    "the of and to in a is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her all she there would their we him been has when who "
    "will more no if out so said what up its about into than them can only other new some "
    "could time these two may then do first any my now such like our over man me even most "
    "made after also did many before must through back years where much your way well down "
    "should because each just those people how too little state good very make world still "
    "own see men work long get here between both life being under never day same another "
    "know while last might us great old year off come since against go came right used take "
    "three budget review quarterly forecast revenue pipeline customer contract renewal "
    "incident postmortem deployment latency throughput outage escalation onboarding payroll "
    "benefits compliance audit retention procurement invoice vendor warehouse inventory "
    "shipment logistics manufacturing calibration inspection turbine blade drone sensor "
    "firmware telemetry dashboard analytics architecture database replication migration "
    "kubernetes cluster observability encryption credentials authentication authorization "
    "roadmap milestone stakeholder requirement specification prototype validation regression "
    "performance appraisal headcount recruiting interview offer relocation travel expense "
    "reimbursement policy guideline handbook training certification safety hazard emergency"
)
_WORDS = tuple(_VOCABULARY.split())
_NAMES = ("Amsterdam", "Austin", "Pune", "Rotterdam", "Kestrel", "Harrier", "Osprey", "Q3", "EMEA")
_DEPARTMENTS = (
    "engineering",
    "finance",
    "hr",
    "legal",
    "operations",
    "sales",
    "support",
    "research",
    "security",
)
# share of each type in the corpus (cumulative draw)
_MIX = (("txt", 0.30), ("md", 0.30), ("html", 0.25), ("docx", 0.10), ("pdf", 0.05))
TYPES = tuple(kind for kind, _ in _MIX)
_MIN_KB, _MAX_KB = 1.0, 30.0
_EPOCH = (2026, 1, 1, 0, 0, 0)


@dataclass
class CorpusInfo:
    root: Path
    documents: int
    text_bytes: int
    file_bytes: int
    by_type: dict[str, int]

    def describe(self) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in self.by_type.items() if v)
        return (
            f"{self.documents} documents ({kinds}); {self.text_bytes / 1e6:.1f} MB of text, "
            f"{self.file_bytes / 1e6:.1f} MB on disk"
        )


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 22))]
    if rng.random() < 0.3:
        words.insert(rng.randrange(len(words)), rng.choice(_NAMES))
    if rng.random() < 0.25:
        words.insert(rng.randrange(len(words)), str(rng.randint(2, 9999)))
    if rng.random() < 0.3:
        cut = rng.randrange(2, len(words))
        words[cut - 1] += ","
    return " ".join(words).capitalize() + rng.choice(".....?!")


def _paragraph(rng: random.Random) -> str:
    return " ".join(_sentence(rng) for _ in range(rng.randint(2, 6)))


@dataclass
class _Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)


def _document(rng: random.Random, target: int) -> tuple[str, list[_Section]]:
    """A title and sections whose text adds up to about ``target`` characters."""
    title = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(2, 5))).title()
    sections: list[_Section] = []
    size = len(title)
    while size < target:
        section = _Section(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 4))).title())
        for _ in range(rng.randint(1, 4)):
            section.paragraphs.append(_paragraph(rng))
        if rng.random() < 0.3:
            section.items = [_sentence(rng) for _ in range(rng.randint(2, 5))]
        size += len(section.title) + sum(map(len, section.paragraphs + section.items))
        sections.append(section)
    return title, sections


def _txt(title: str, sections: list[_Section]) -> str:
    parts = [title]
    for s in sections:
        parts += [s.title, *s.paragraphs, *(f"- {i}" for i in s.items)]
    return "\n\n".join(parts) + "\n"


def _md(title: str, sections: list[_Section]) -> str:
    parts = [f"# {title}"]
    for n, s in enumerate(sections):
        paragraphs = list(s.paragraphs)
        if n % 3 == 1:
            paragraphs[0] = f"**Note:** {paragraphs[0]} See [the wiki](https://wiki.example/{n})."
        parts += [f"## {s.title}", *paragraphs]
        if s.items:
            parts.append("\n".join(f"- {i}" for i in s.items))
    return "\n\n".join(parts) + "\n"


def _html(title: str, sections: list[_Section]) -> str:
    body = [f"<h1>{title}</h1>"]
    for s in sections:
        body.append(f"<h2>{s.title}</h2>")
        body += [f"<p>{p}</p>" for p in s.paragraphs]
        if s.items:
            body.append("<ul>" + "".join(f"<li>{i}</li>" for i in s.items) + "</ul>")
    nav = '<nav><a href="/">Home</a> | <a href="/docs">Docs</a></nav>'
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>body {{ font-family: sans-serif; }}</style></head><body>{nav}"
        + "\n".join(body)
        + "<footer>Internal use only.</footer></body></html>\n"
    )


def _docx(title: str, sections: list[_Section]) -> bytes:
    import docx

    document = docx.Document()
    document.core_properties.title = title
    document.add_heading(title, 1)
    for s in sections:
        document.add_heading(s.title, 2)
        for p in s.paragraphs:
            document.add_paragraph(p)
        for i in s.items:
            document.add_paragraph(i, style="List Bullet")
    saved = io.BytesIO()
    document.save(saved)
    # the same bytes every time: python-docx stamps the ZIP entries with the current time
    out = io.BytesIO()
    with zipfile.ZipFile(saved) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            info = zipfile.ZipInfo(item.filename, _EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(info, src.read(item.filename))
    return out.getvalue()


def _wrap(text: str, width: int = 95) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    return [*lines, current] if current else lines


def _pdf(title: str, sections: list[_Section]) -> bytes:
    """A valid multi-page PDF (Helvetica text, 56 lines a page), as scripts/build_demo_corpus.py
    writes its one-page ones."""
    lines = [title, ""]
    for s in sections:
        lines += [s.title]
        for p in [*s.paragraphs, *s.items]:
            lines += [*_wrap(p), ""]
    pages = [lines[i : i + 56] for i in range(0, len(lines), 56)]
    count = len(pages)
    # objects: 1 catalog, 2 pages, 3 font, then (page, contents) per page
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(count))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {count} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, page in enumerate(pages):
        ops = ["BT /F1 10 Tf 56 760 Td 13 TL"]
        for line in page:
            escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"({escaped}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1", "replace")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {5 + 2 * i} 0 R "
            "/Resources << /Font << /F1 3 0 R >> >> >>".encode()
        )
        objects.append(
            b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream"
        )
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


_WRITERS: dict[str, Callable[[str, list[_Section]], str | bytes]] = {
    "txt": _txt,
    "md": _md,
    "html": _html,
    "docx": _docx,
    "pdf": _pdf,
}


def _kind(rng: random.Random, mix: Sequence[tuple[str, float]]) -> str:
    draw, total = rng.random() * sum(share for _, share in mix), 0.0
    for kind, share in mix:
        total += share
        if draw < total:
            return kind
    return mix[-1][0]


def build_corpus(
    root: Path,
    documents: int,
    seed: int = 16,
    *,
    max_kb: float = _MAX_KB,
    types: Sequence[str] = TYPES,
    every_kind: bool = False,
) -> CorpusInfo:
    """Write ``documents`` files under ``root`` (emptied first), the same for the same
    arguments: one folder per department plus ``public``, each with a ``.rag-acl.toml``.
    ``types``: the file types drawn (by their shares); ``every_kind``: them in turn instead."""
    if documents < 1:
        raise ValueError("documents must be at least 1")
    mix = [(kind, share) for kind, share in _MIX if kind in types]
    if not mix or len(mix) != len(set(types)):
        raise ValueError(f"types must be some of {TYPES}")
    shutil.rmtree(root, ignore_errors=True)
    folders = [*_DEPARTMENTS, "public"]
    names: dict[str, list[str]] = {f: [] for f in folders}
    by_type = dict.fromkeys((kind for kind, _ in mix), 0)
    text_bytes = file_bytes = 0
    for i in range(documents):
        rng = random.Random(seed * 1_000_003 + i)
        kind = mix[i % len(mix)][0] if every_kind else _kind(rng, mix)
        folder = folders[i % len(folders)]
        target = int(1000 * math.exp(rng.uniform(math.log(_MIN_KB), math.log(max_kb))))
        title, sections = _document(rng, target)
        content = _WRITERS[kind](title, sections)
        data = content.encode("utf-8") if isinstance(content, str) else content
        name = f"{title.lower().replace(' ', '-')[:40]}-{i:05d}.{kind}"
        path = root / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        names[folder].append(name)
        by_type[kind] += 1
        text_bytes += len(title) + sum(
            len(s.title) + sum(map(len, s.paragraphs + s.items)) for s in sections
        )
        file_bytes += len(data)
    for n, folder in enumerate(folders):
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / ".rag-acl.toml").write_text(_policy(folder, n, names[folder]), "utf-8")
    return CorpusInfo(root, documents, text_bytes, file_bytes, by_type)


def _policy(folder: str, n: int, files: list[str]) -> str:
    if folder == "public":
        return "public = true\n"
    lines = [f'allow = ["group:{folder}", "group:leads"]']
    if n % 3 == 0:
        lines.append('deny = ["user:mallory"]')
    for name in files[:: max(len(files) // 3, 1)][:3]:  # a few per-file overrides
        lines += ["", f'[files."{name}"]', "inherit = false", f'allow = ["group:{folder}-leads"]']
    return "\n".join(lines) + "\n"


# -- results ---------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    documents: int
    chunks: int
    seconds: float  # wall, end to end
    stages: dict[str, float]
    detail: dict[str, dict[str, float]] = field(default_factory=dict)  # stage -> part -> s
    indexed: int = -1  # chunks the node holds afterwards (a check)
    notes: list[str] = field(default_factory=list)

    @property
    def docs_per_s(self) -> float:
        return self.documents / self.seconds if self.seconds > 0 else float("nan")

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.seconds if self.seconds > 0 else float("nan")


def median_run(runs: Sequence[Result]) -> Result:
    """The run with the median wall time (the lower one of an even count), with its own stages
    so that they add up."""
    ordered = sorted(runs, key=lambda r: r.seconds)
    return ordered[(len(ordered) - 1) // 2]


def table(results: Sequence[Result], baseline: Result) -> str:
    rows = [
        f"{'pipeline':<36}{'docs':>6}{'chunks':>8}{'wall s':>9}{'docs/s':>9}{'chunks/s':>10}"
        f"{'docs/s vs base':>16}"
    ]
    for r in results:
        rows.append(
            f"{r.name:<36}{r.documents:>6}{r.chunks:>8}{r.seconds:>9.1f}{r.docs_per_s:>9.2f}"
            f"{r.chunks_per_s:>10.1f}{r.docs_per_s / baseline.docs_per_s:>15.2f}x"
        )
    return "\n".join(rows)


def _parts(parts: dict[str, float], total: float) -> list[str]:
    ordered = sorted(parts.items(), key=lambda kv: -kv[1])
    return [f"      {part:<38}{s:>9.2f} s {100 * s / total:>5.1f}%" for part, s in ordered]


def profile(result: Result) -> str:
    """Seconds per stage and share of the wall time; the largest stage bounds the run."""
    total = result.seconds
    outside = max(total - sum(result.stages.values()), 0.0)
    top = max(result.stages, key=lambda s: result.stages[s]) if result.stages else "-"
    lines = [f"  {result.name}: bound by {top}"]
    rows = sorted([*result.stages.items(), ("(outside stages)", outside)], key=lambda kv: -kv[1])
    for stage, seconds in rows:
        lines.append(f"    {stage:<40}{seconds:>9.2f} s {100 * seconds / total:>5.1f}%")
        lines += _parts(result.detail.get(stage, {}), total)
    for name, parts in result.detail.items():
        if name not in result.stages and parts:
            lines += [f"    {name}:", *_parts(parts, total)]
    lines += [f"    note: {n}" for n in result.notes]
    return "\n".join(lines)


# -- the LangChain baseline ------------------------------------------------------------------


def langchain_embeddings(embedder: Any, batch_size: int) -> Any:
    """``embedder`` (a rag Embedder) as a LangChain ``Embeddings``, batched like the pipeline."""
    from langchain_core.embeddings import Embeddings

    from rag.embeddings import embed_in_batches, embed_query

    class _Wrapped(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            rows: list[list[float]] = embed_in_batches(embedder, texts, batch_size).tolist()
            return rows

        def embed_query(self, text: str) -> list[float]:
            row: list[float] = embed_query(embedder, text).tolist()
            return row

    return _Wrapped()


def docx_loader() -> Any:
    """The tutorials' Word loader: Docx2txtLoader, or UnstructuredWordDocumentLoader where
    docx2txt is not installed."""
    from langchain_community.document_loaders import (
        Docx2txtLoader,
        UnstructuredWordDocumentLoader,
    )

    if importlib.util.find_spec("docx2txt") is None:
        return UnstructuredWordDocumentLoader
    return Docx2txtLoader


def baseline_loaders(root: Path, variant: str) -> list[tuple[str, Any]]:
    """The ``DirectoryLoader`` calls of the baseline, each with a label (see the module
    docstring)."""
    from langchain_community.document_loaders import (
        BSHTMLLoader,
        DirectoryLoader,
        PyPDFLoader,
        TextLoader,
    )

    where = str(root)
    pdf_loader: Any = PyPDFLoader  # DirectoryLoader's annotation omits the loaders it takes
    pdf = ("pdf PyPDFLoader", DirectoryLoader(where, glob="**/*.pdf", loader_cls=pdf_loader))
    if variant == "unstructured":  # DirectoryLoader's default loader: UnstructuredFileLoader
        everything = DirectoryLoader(where, glob="**/*", exclude=["**/*.pdf"])
        return [("other UnstructuredFile", everything), pdf]
    if variant != "per-type":
        raise ValueError(f"unknown loader variant {variant!r}")
    utf8 = {"encoding": "utf-8"}
    word = docx_loader()
    return [
        (
            "txt TextLoader",
            DirectoryLoader(where, "**/*.txt", loader_cls=TextLoader, loader_kwargs=utf8),
        ),
        (
            "md TextLoader",
            DirectoryLoader(where, "**/*.md", loader_cls=TextLoader, loader_kwargs=utf8),
        ),
        (
            "html BSHTMLLoader",
            DirectoryLoader(
                where,
                "**/*.html",
                loader_cls=BSHTMLLoader,
                loader_kwargs={"open_encoding": "utf-8"},
            ),
        ),
        (f"docx {word.__name__}", DirectoryLoader(where, "**/*.docx", loader_cls=word)),
        pdf,
    ]


def splitter(max_tokens: int, overlap: int, encoding: str) -> Any:
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    return RecursiveCharacterTextSplitter.from_tiktoken_encoder(
        encoding_name=encoding, chunk_size=max_tokens, chunk_overlap=overlap
    )


@dataclass(frozen=True)
class Chunking:
    max_tokens: int
    overlap: int
    encoding: str


def run_baseline(
    root: Path,
    url: str,
    embeddings: Any,
    *,
    variant: str,
    index: str,
    chunking: Chunking,
    bulk_size: int = 500,
) -> Result:
    """Load, split, and ``add_texts`` in batches of ``bulk_size``, each half timed apart."""
    from langchain_community.vectorstores import OpenSearchVectorSearch

    stages = {"load": 0.0, "split": 0.0, "embed": 0.0, "index": 0.0}
    loads: dict[str, float] = {}
    start = time.perf_counter()
    docs = []
    for label, loader in baseline_loaders(root, variant):
        with _timed(stages, "load"), _timed(loads, label):
            docs += loader.load()
    with _timed(stages, "split"):
        splits = splitter(chunking.max_tokens, chunking.overlap, chunking.encoding).split_documents(
            docs
        )
    store = OpenSearchVectorSearch(url, index, embeddings, engine="lucene", timeout=120)
    hnsw: dict[str, Any] = {
        "space_type": "cosinesimil",
        "m": 16,
        "ef_construction": 128,
        "ef_search": 512,
    }
    for begin in range(0, len(splits), bulk_size):
        batch = splits[begin : begin + bulk_size]
        texts = [d.page_content for d in batch]
        # add_texts(texts, metadatas) is exactly: embed_documents, then this bulk ingest
        with _timed(stages, "embed"):
            vectors = embeddings.embed_documents(texts)
        with _timed(stages, "index"):
            store.add_embeddings(
                list(zip(texts, vectors, strict=True)),
                metadatas=[d.metadata for d in batch],
                bulk_size=bulk_size,
                **hnsw,
            )
    seconds = time.perf_counter() - start
    store.client.indices.refresh(index=index)
    indexed = int(store.client.count(index=index)["count"])
    documents = len({d.metadata.get("source") for d in docs})  # PyPDFLoader: one per page
    name = f"langchain ({variant} loaders)"
    detail = {"load": loads}
    return Result(name, documents, len(splits), seconds, stages, detail, indexed)


@contextmanager
def _timed(into: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        into[name] = into.get(name, 0.0) + time.perf_counter() - start


# -- ours ------------------------------------------------------------------------------------


@contextmanager
def _parse_by_type(into: dict[str, float]) -> Iterator[None]:
    """Time the pipeline's parse calls by file type (one clock read per document)."""
    from unittest.mock import patch

    import rag.pipeline

    name = next(n for n in ("parse_document", "parse") if hasattr(rag.pipeline, n))
    real = getattr(rag.pipeline, name)

    def timed(data: bytes, filename: str, *args: Any, **kwargs: Any) -> Any:
        with _timed(into, PurePath(filename).suffix.lstrip(".") or "?"):
            return real(data, filename, *args, **kwargs)

    with patch.object(rag.pipeline, name, new=timed):
        yield


@contextmanager
def _store_calls(into: dict[str, float]) -> Iterator[None]:
    """Time the OpenSearch writes of our run, inside and outside the stages: chunk bulk,
    stale-chunk deletes, sync state and run record writes (labelled with their call counts)."""
    from unittest.mock import patch

    from rag.stores.opensearch import OpenSearchStore
    from rag.stores.opensearch_runs import OpenSearchRunLog
    from rag.stores.opensearch_state import OpenSearchSyncState

    targets = [
        (OpenSearchStore, "upsert", "chunk bulk upsert"),
        (OpenSearchStore, "delete_document", "stale-chunk delete"),
        (OpenSearchSyncState, "put", "sync state put"),
        (OpenSearchRunLog, "put_run", "run record put"),
        (OpenSearchRunLog, "put_batches", "run record put"),
    ]
    seconds: dict[str, float] = {}
    calls: dict[str, int] = {}

    def wrap(real: Callable[..., Any], label: str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            calls[label] = calls.get(label, 0) + 1
            with _timed(seconds, label):
                return real(*args, **kwargs)

        return timed

    with ExitStack() as stack:
        for cls, method, label in targets:
            if hasattr(cls, method):
                stack.enter_context(
                    patch.object(cls, method, new=wrap(getattr(cls, method), label))
                )
        try:
            yield
        finally:
            into.update({f"{label} ({calls[label]} calls)": s for label, s in seconds.items()})


def run_ours(
    root: Path, url: str, embedder: Any, *, alias: str, data_dir: Path, cprofile: bool = False
) -> Result:
    """``rag.pipeline.ingest`` with the filesystem connector and the OpenSearch store."""
    from opensearchpy import OpenSearch

    from connectors.filesystem import FilesystemConnector
    from rag.config import OpenSearchSettings, Settings, StoreSettings
    from rag.pipeline import ingest

    settings = Settings(
        data_dir=data_dir,
        store=StoreSettings(
            backend="opensearch",
            opensearch=OpenSearchSettings(hosts=[url], alias=alias, timeout_seconds=120),
        ),
    )
    connector = FilesystemConnector(root, "bench")
    profiler = cProfile.Profile() if cprofile else None
    parses: dict[str, float] = {}
    writes: dict[str, float] = {}
    with _parse_by_type(parses), _store_calls(writes):
        start = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        summary = ingest(connector, settings, embedder=embedder)
        if profiler is not None:
            profiler.disable()
        seconds = time.perf_counter() - start
    notes = []
    if summary.quarantined:
        reasons = sorted({f"{q.stage}/{q.reason}" for q in summary.quarantined})
        notes.append(f"{len(summary.quarantined)} quarantined: {', '.join(reasons)}")
    if summary.embedded_texts != summary.chunks:
        notes.append(f"embedded {summary.embedded_texts} of {summary.chunks} chunk texts (cache)")
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(30)
        notes.append("cProfile (cumulative; its overhead slows this run):\n" + out.getvalue())
    client = OpenSearch(url, timeout=120)
    client.indices.refresh(index=alias)
    indexed = int(client.count(index=alias)["count"])
    detail = {
        "parse": {f"{kind} files": s for kind, s in parses.items()},
        "OpenSearch writes (in load and outside stages)": writes,
    }
    return Result(
        "ours (rag.pipeline.ingest)",
        summary.documents_ingested,
        summary.chunks,
        seconds,
        dict(summary.seconds),
        detail,
        indexed,
        notes,
    )


# -- the run ---------------------------------------------------------------------------------


@contextmanager
def _node(url: str | None, port: int, heap: str) -> Iterator[str]:
    """``url``, or a fresh local node on ``port`` for the length of the block."""
    if url is not None:
        yield url.rstrip("/")
        return
    env = {**os.environ, "RAG_OPENSEARCH_HEAP": heap}
    subprocess.run(
        [str(SCRIPT), "start", str(port)], check=True, env=env, stdout=subprocess.DEVNULL
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        subprocess.run([str(SCRIPT), "stop", str(port)], check=False, stdout=subprocess.DEVNULL)


def _drop(url: str, pattern: str) -> None:
    """Delete the indexes matching ``pattern`` (keeps the node's heap for the next run)."""
    from opensearchpy import OpenSearch

    client = OpenSearch(url, timeout=120)
    for name in client.indices.get(index=pattern, ignore_unavailable=True):
        client.indices.delete(index=name, ignore_unavailable=True)


def run_reference(
    tree: Path,
    root: Path,
    warmup: Path,
    url: str,
    embedder_name: str,
    *,
    alias: str,
    data_dir: Path,
) -> Result:
    """``run_ours`` with the ``rag`` and ``connectors`` of another source tree (a checkout of
    an earlier commit: before/after in one bench run), in a fresh process that puts the tree
    first on its path and warms up on ``warmup`` first, untimed."""
    job = {
        "root": str(root),
        "warmup": str(warmup),
        "url": url,
        "embedder": embedder_name,
        "alias": alias,
        "data_dir": str(data_dir),
    }
    code = (
        "import runpy, sys; sys.path.insert(0, sys.argv[1]); "
        "sys.argv = [sys.argv[2], '--reference-worker', sys.argv[3]]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    command = [sys.executable, "-c", code, str(tree.resolve()), __file__, json.dumps(job)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    data = json.loads(done.stdout.strip().splitlines()[-1])
    data["name"] = f"ours at {tree}"
    return Result(**data)


def _reference_worker(job: dict[str, Any]) -> None:
    """The process of :func:`run_reference` (``rag`` is imported from the tree given)."""
    from rag.config import EmbeddingSettings
    from rag.embeddings import build_embedder
    from rag.parsing import _unstructured
    from rag.tokens import get_encoding

    get_encoding("cl100k_base")
    _unstructured()
    model = build_embedder(EmbeddingSettings.model_validate({"provider": job["embedder"]}))
    url, alias, data_dir = job["url"], job["alias"], Path(job["data_dir"])
    run_ours(Path(job["warmup"]), url, model, alias=f"{alias}-warm", data_dir=data_dir / "warm")
    _drop(url, f"{alias}-warm*")
    result = run_ours(Path(job["root"]), url, model, alias=alias, data_dir=data_dir / "run")
    _drop(url, f"{alias}*")
    shutil.rmtree(data_dir, ignore_errors=True)
    print(json.dumps(asdict(result)), flush=True)


def compare(
    url: str,
    work: Path,
    corpus: CorpusInfo,
    warmup: CorpusInfo,
    embedder_name: str,
    variants: Sequence[str],
    repeats: int,
    cprofile: bool,
    reference: Path | None = None,
) -> list[Result]:
    """Each baseline variant, the reference tree's pipeline (if given) and ours, ``repeats``
    times each, interleaved (every repeat runs each once, so a machine that slows down or
    speeds up mid-run weighs on all alike; the median run of each is kept), all with one
    embedder instance; the warm-up corpus goes through each first, untimed."""
    from rag.config import ChunkingSettings, EmbeddingSettings
    from rag.embeddings import build_embedder

    emb = EmbeddingSettings.model_validate({"provider": embedder_name})
    ours_chunking = ChunkingSettings()
    chunking = Chunking(
        ours_chunking.max_tokens, ours_chunking.overlap_tokens, ours_chunking.encoding
    )
    model = build_embedder(emb)
    wrapped = langchain_embeddings(model, emb.batch_size)
    tag = f"{embedder_name}-{os.getpid()}"
    for variant in variants:
        warm = f"bench-lc-warm-{tag}"
        run_baseline(warmup.root, url, wrapped, variant=variant, index=warm, chunking=chunking)
        _drop(url, warm)
    run_ours(warmup.root, url, model, alias=f"bench-ours-warm-{tag}", data_dir=work / "warm")
    _drop(url, f"bench-ours-warm-{tag}*")
    shutil.rmtree(work / "warm", ignore_errors=True)
    runs: dict[str, list[Result]] = {}
    for r in range(repeats):
        for variant in variants:
            index = f"bench-lc-{variant}-{tag}-{r}"
            runs.setdefault(variant, []).append(
                run_baseline(
                    corpus.root, url, wrapped, variant=variant, index=index, chunking=chunking
                )
            )
            _drop(url, index)
        if reference is not None:
            runs.setdefault("reference", []).append(
                run_reference(
                    reference,
                    corpus.root,
                    warmup.root,
                    url,
                    embedder_name,
                    alias=f"bench-ref-{tag}-{r}",
                    data_dir=work / f"ref-{tag}-{r}",
                )
            )
        alias, data_dir = f"bench-ours-{tag}-{r}", work / f"ours-{tag}-{r}"
        runs.setdefault("ours", []).append(
            run_ours(
                corpus.root,
                url,
                model,
                alias=alias,
                data_dir=data_dir,
                cprofile=cprofile and r == 0,
            )
        )
        _drop(url, f"{alias}*")
        shutil.rmtree(data_dir, ignore_errors=True)
    out = []
    for of_one in runs.values():
        kept = median_run(of_one)
        if len(of_one) > 1:
            walls = ", ".join(f"{x.seconds:.1f}" for x in of_one)
            kept.notes.append(f"median of {len(of_one)} runs (wall s: {walls})")
        out.append(kept)
    return out


def report(embedder: str, corpus: CorpusInfo, results: list[Result]) -> str:
    """The table, the ratio of ours to the first baseline, and every run's stage profile."""
    baseline, ours = results[0], results[-1]
    for r in results:
        if r.indexed != r.chunks:
            r.notes.append(f"the node holds {r.indexed} chunks; {r.chunks} were made")
        if r.documents != corpus.documents:
            r.notes.append(f"{r.documents} of {corpus.documents} documents ingested")
    lines = [
        f"== embedder {embedder}, {corpus.describe()}",
        table(results, baseline),
        *(
            f"ours / {other.name}: {ours.docs_per_s / other.docs_per_s:.2f}x docs/s, "
            f"{ours.chunks_per_s / other.chunks_per_s:.2f}x chunks/s"
            for other in results[:-1]
        ),
        "where the time goes (seconds, share of the wall time):",
        *(profile(r) for r in results),
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench ingest_compare")
    parser.add_argument("--docs", type=int, default=2000, help="documents in the corpus")
    parser.add_argument(
        "--embedder",
        nargs="+",
        choices=["hash", "minilm"],
        default=["hash", "minilm"],
        help="embedders, each a full comparison (hash: cheap, so the rest shows; minilm: the "
        "offline model)",
    )
    parser.add_argument(
        "--minilm-docs",
        type=int,
        default=None,
        help="documents for the minilm comparison (default: --docs)",
    )
    parser.add_argument(
        "--loaders",
        nargs="+",
        choices=["per-type", "unstructured"],
        default=["per-type", "unstructured"],
        help="baseline loader variants; the first is the ratios' baseline",
    )
    parser.add_argument(
        "--types",
        nargs="+",
        choices=TYPES,
        default=list(TYPES),
        help="file types in the corpus (shares txt 30%%, md 30%%, html 25%%, docx 10%%, pdf 5%%, "
        "renormalized over those chosen)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs of each; the median is kept")
    parser.add_argument("--url", default=None, help="use this OpenSearch node, not a new one")
    parser.add_argument("--port", type=int, default=9290, help="port of the node this run starts")
    parser.add_argument("--heap", default="1g", help="heap of the node this run starts")
    parser.add_argument("--workdir", type=Path, default=None, help="kept; default: a temp folder")
    parser.add_argument("--cprofile", action="store_true", help="also cProfile our first run")
    parser.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="also run the pipeline of this source tree (its rag/ and connectors/: a checkout "
        "of an earlier commit), in a subprocess, interleaved with the others: before/after in "
        "one run",
    )
    if argv[:1] == ["--reference-worker"]:
        _reference_worker(json.loads(argv[1]))
        return
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    from rag.parsing import _unstructured
    from rag.tokens import get_encoding

    get_encoding("cl100k_base")  # the shipped vocabulary: the baseline's tiktoken works offline
    _unstructured()  # unstructured's spaCy model, offline, for both sides (a user installs it)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        begin = time.perf_counter()
        corpus = build_corpus(work / "corpus", args.docs, types=args.types)
        print(f"corpus: {corpus.describe()} (written in {time.perf_counter() - begin:.0f} s)")
        warmup = build_corpus(work / "warmup", len(TYPES), seed=99, max_kb=2.0, every_kind=True)
        print(f"baseline Word loader: {docx_loader().__name__}; cores: {os.cpu_count()}")
        with _node(args.url, args.port, args.heap) as url:
            for name in args.embedder:
                docs = args.minilm_docs if name == "minilm" and args.minilm_docs else args.docs
                here = corpus
                if docs != corpus.documents:
                    here = build_corpus(work / f"corpus-{docs}", docs, types=args.types)
                results = compare(
                    url,
                    work,
                    here,
                    warmup,
                    name,
                    args.loaders,
                    args.repeats,
                    args.cprofile,
                    args.reference,
                )
                print()
                print(report(name, here, results), flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
