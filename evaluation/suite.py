"""Evaluation suites are data: a TOML file per suite (``evaluation/suites/<name>.toml``)."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rag.errors import ConfigurationError
from rag.rerank.settings import RerankSettings

Mode = Literal["dense", "bm25", "hybrid", "dense+rerank", "bm25+rerank", "hybrid+rerank"]
"""A first-stage mode, or one reranked by the suite's ``[rerank]`` reranker."""
FirstStage = Literal["dense", "bm25", "hybrid"]


def first_stage(mode: Mode) -> FirstStage:
    """The retrieval mode under a (possibly reranked) suite mode."""
    if mode in ("dense", "dense+rerank"):
        return "dense"
    return "bm25" if mode in ("bm25", "bm25+rerank") else "hybrid"


def reranked(mode: Mode) -> bool:
    return mode.endswith("+rerank")


class PersonaSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spaces: int = Field(8, ge=2)
    count: int = Field(6, ge=0)
    seed: int = 13


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    dataset: str = "scifact"
    split: str = "test"
    subset_docs: int = Field(0, ge=0, description="Judged docs plus distractors up to this many.")
    queries: int = Field(0, ge=0, description="0: every judged query.")
    store: Literal["lancedb", "opensearch"] = "lancedb"
    embedder: Literal["minilm", "hash", "bedrock", "sagemaker", "tei"] = "minilm"
    modes: list[Mode] = Field(default_factory=lambda: list[Mode](["dense"]))
    k: int = Field(100, ge=10)
    chunk_tokens: int = Field(200, ge=32)
    personas: PersonaSpec = PersonaSpec()
    thresholds: dict[str, float] = Field(
        default_factory=dict, description='Minimums, e.g. "dense.nDCG@10" = 0.6 (the all persona).'
    )
    tolerances: dict[str, float] = Field(
        default_factory=dict, description='Allowed drop against the last run, e.g. "nDCG@10".'
    )
    seed: int = 7
    rerank: RerankSettings | None = Field(
        None,
        description="The reranker of the +rerank modes (a [rerank] table: RAG_RERANK__* settings; "
        "relative model folders resolve against the working directory). Its failures fail the "
        "run: on_error is always raise.",
    )

    @model_validator(mode="after")
    def _reranker_named(self) -> Self:
        rows = [m for m in self.modes if reranked(m)]
        if rows and (self.rerank is None or self.rerank.provider == "none"):
            raise ValueError(f"modes {rows} need a [rerank] table naming a provider")
        return self


def load_suite(name_or_path: str) -> Suite:
    """A shipped suite by name, or a suite file by path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        text = path.read_text("utf-8")
    else:
        shipped = resources.files("evaluation") / "suites" / f"{name_or_path}.toml"
        if not shipped.is_file():
            raise ConfigurationError(f"no evaluation suite {name_or_path!r}")
        text = shipped.read_text("utf-8")
    try:
        return Suite.model_validate(tomllib.loads(text))
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ConfigurationError(f"invalid suite {name_or_path}: {exc}") from exc
