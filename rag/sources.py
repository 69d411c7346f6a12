"""Sources declared in a config file (``sources.yaml``): one scheduled ingestion per source.

sources:
  - name: handbook                 # [A-Za-z0-9._-], part of every document id
    connector: filesystem          # or "package.module:ClassName" for your own connector
    options: {root: /data/handbook}  # relative paths resolve against this file's folder
    schedule: "@hourly"            # cron or preset; null = only when triggered
    store: opensearch              # lancedb (default) or opensearch
    embedder: bedrock              # minilm (default), hash, bedrock, sagemaker, tei
    batch_size: 200                # documents per mapped task
    settings: {chunking: {max_tokens: 300}}   # any Settings field, deep-merged
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rag.config import Settings
from rag.errors import ConfigurationError


class SourceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")
    connector: str = "filesystem"
    options: dict[str, Any] = Field(default_factory=dict)
    schedule: str | None = "@daily"
    store: Literal["lancedb", "opensearch"] | None = None
    embedder: Literal["minilm", "hash", "bedrock", "sagemaker", "tei"] | None = None
    batch_size: int = Field(200, ge=1)
    settings: dict[str, Any] = Field(default_factory=dict)
    base_dir: Path = Field(default=Path("."), exclude=True)

    def settings_over(self, base: Settings) -> Settings:
        """``base`` with this source's overrides deep-merged in (secrets kept)."""
        overrides: dict[str, Any] = copy.deepcopy(self.settings)
        if self.store:
            _merge(overrides, {"store": {"backend": self.store}})
        if self.embedder:
            _merge(overrides, {"embedding": {"provider": self.embedder}})
        try:
            return derive_settings(base, overrides)
        except ConfigurationError as exc:
            raise ConfigurationError(f"source {self.name}: {exc}") from exc


def derive_settings(base: Settings, overrides: Mapping[str, Any]) -> Settings:
    """``base`` with ``overrides`` (nested mappings, like the environment's ``__`` sections)
    deep-merged in, validated again.

    Secrets survive: ``base`` is dumped in python mode, which keeps ``SecretStr`` objects as they
    are (a JSON-mode dump would turn every one into ``'**********'``).
    """
    data = base.model_dump()
    _merge(data, copy.deepcopy(dict(overrides)))
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigurationError(f"invalid settings: {exc}") from exc


def _merge(into: dict[str, Any], overrides: Mapping[str, Any]) -> None:
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def load_sources(path: Path) -> list[SourceSpec]:
    """Parse and validate a sources file; names must be unique."""
    try:
        raw = yaml.safe_load(path.read_text("utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read sources file {path}: {exc}") from exc
    entries = raw.get("sources", []) if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise ConfigurationError(f"{path}: expected a mapping with a 'sources' list")
    try:
        specs = [SourceSpec.model_validate({**e, "base_dir": path.parent}) for e in entries]
    except (ValidationError, TypeError) as exc:
        raise ConfigurationError(f"{path}: {exc}") from exc
    names = [s.name for s in specs]
    if len(names) != len(set(names)):
        raise ConfigurationError(f"{path}: source names must be unique: {names}")
    return specs
