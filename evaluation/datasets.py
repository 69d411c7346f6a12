"""Loaders for BEIR-format retrieval benchmarks (corpus.jsonl, queries.jsonl, qrels/*.tsv)."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BeirDataset:
    name: str
    corpus: dict[str, tuple[str, str]]  # doc id -> (title, text)
    queries: dict[str, str]  # query id -> text (only those with judgements)
    qrels: dict[str, dict[str, int]]  # query id -> doc id -> relevance


def default_eval_root() -> Path:
    """``RAG_EVAL_DATA`` or ``../shared/eval`` beside the repository."""
    env = os.environ.get("RAG_EVAL_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "eval"


def load_beir(path: Path, split: str = "test") -> BeirDataset:
    """A BEIR dataset folder; queries are limited to those judged in ``split``."""
    corpus: dict[str, tuple[str, str]] = {}
    with (path / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            corpus[str(row["_id"])] = (row.get("title") or "", row.get("text") or "")
    qrels: dict[str, dict[str, int]] = {}
    with (path / "qrels" / f"{split}.tsv").open(encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t")
        next(reader)  # header
        for query_id, doc_id, score in reader:
            qrels.setdefault(query_id, {})[doc_id] = int(score)
    queries: dict[str, str] = {}
    with (path / "queries.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if str(row["_id"]) in qrels:
                queries[str(row["_id"])] = row["text"]
    return BeirDataset(path.name, corpus, queries, qrels)
