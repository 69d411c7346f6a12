"""Evaluation suites are data: a TOML file per suite (``evaluation/suites/<name>.toml``)."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rag.errors import ConfigurationError

Mode = Literal["dense", "bm25", "hybrid"]


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
