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

Each entry is validated on its own (:func:`load_sources`): a bad one is reported with its
position and name while the others run.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from connectors.registry import BUILT_IN
from rag.config import Settings
from rag.errors import ConfigurationError

NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$"
"""A source's name: part of every document id and of its DAG's id."""
_CUSTOM_CONNECTOR: Final = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class SourceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    connector: str = "filesystem"
    options: dict[str, Any] = Field(default_factory=dict)
    schedule: str | None = "@daily"
    store: Literal["lancedb", "opensearch"] | None = None
    embedder: Literal["minilm", "hash", "bedrock", "sagemaker", "tei"] | None = None
    batch_size: int = Field(200, ge=1)
    settings: dict[str, Any] = Field(default_factory=dict)
    base_dir: Path = Field(default=Path("."), exclude=True)

    @field_validator("connector")
    @classmethod
    def _known_connector(cls, kind: str) -> str:
        if kind in BUILT_IN or _CUSTOM_CONNECTOR.fullmatch(kind):
            return kind
        known = ", ".join(sorted(BUILT_IN))
        raise ValueError(f"unknown connector {kind!r} (built in: {known}, or package.module:Class)")

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


@dataclass(frozen=True)
class SourceProblem:
    """A bad entry of a sources file: its position (from 1), its name when it has a valid one,
    and why it cannot run."""

    position: int
    name: str | None
    message: str

    def __str__(self) -> str:
        who = f"source {self.name!r}" if self.name else "no valid name"
        return f"entry {self.position} ({who}): {self.message}"


@dataclass(frozen=True)
class Sources:
    """A sources file: the entries that validate, and each bad entry on its own, so one bad
    entry never takes the others down."""

    path: Path
    specs: tuple[SourceSpec, ...]
    problems: tuple[SourceProblem, ...]

    def get(self, name: str) -> SourceSpec:
        """The source ``name``; a ConfigurationError that says why when it is bad or gone."""
        for spec in self.specs:
            if spec.name == name:
                return spec
        for problem in self.problems:
            if problem.name == name:
                raise ConfigurationError(f"{self.path}: {problem}")
        raise ConfigurationError(f"{self.path}: no source named {name!r}")

    def report(self) -> str:
        """Every bad entry, one a line ('' when there is none)."""
        if not self.problems:
            return ""
        lines = [f"{self.path}: bad source entries (the others run): {len(self.problems)}"]
        return "\n".join([*lines, *(f"  {p}" for p in self.problems)])


def load_sources(path: Path, base: Settings | None = None) -> Sources:
    """Parse a sources file and validate each entry on its own: its keys and values, its
    connector kind, a name no other entry uses and, when ``base`` is given, its settings
    overrides merged into ``base``. Only a file that cannot be read as a list of sources at
    all raises."""
    try:
        raw = yaml.safe_load(path.read_text("utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read sources file {path}: {exc}") from exc
    entries = raw.get("sources", []) if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise ConfigurationError(f"{path}: expected a mapping with a 'sources' list")
    names = [_name_of(entry) for entry in entries]
    specs: list[SourceSpec] = []
    problems: list[SourceProblem] = []
    for position, (entry, name) in enumerate(zip(entries, names, strict=True), start=1):
        if name is not None and names.count(name) > 1:  # which one is meant? neither runs
            used = [i for i, other in enumerate(names, start=1) if other == name]
            problems.append(SourceProblem(position, name, f"name used by entries {used}"))
            continue
        checked = _check(entry, path.parent, base)
        if isinstance(checked, SourceSpec):
            specs.append(checked)
        else:
            problems.append(SourceProblem(position, name, checked))
    return Sources(path, tuple(specs), tuple(problems))


def _name_of(entry: object) -> str | None:
    name = entry.get("name") if isinstance(entry, dict) else None
    return name if isinstance(name, str) and re.fullmatch(NAME_PATTERN, name) else None


def _check(entry: object, base_dir: Path, base: Settings | None) -> SourceSpec | str:
    """The entry as a source, or why it is not one."""
    if not isinstance(entry, dict):
        return f"expected a mapping of source keys, got {type(entry).__name__}"
    try:
        spec = SourceSpec.model_validate({**entry, "base_dir": base_dir})
    except ValidationError as exc:
        return _errors(exc)
    if base is not None:
        try:
            spec.settings_over(base)
        except ConfigurationError as exc:
            cause: BaseException | None = exc
            while cause is not None and not isinstance(cause, ValidationError):
                cause = cause.__cause__
            return _errors(cause, "settings.") if cause is not None else str(exc)
    return spec


def _errors(exc: ValidationError, prefix: str = "") -> str:
    """A validation error on one line: ``where: what; ...``."""
    return "; ".join(
        f"{prefix}{'.'.join(str(part) for part in error['loc']) or 'entry'}: "
        + error["msg"].removeprefix("Value error, ")
        for error in exc.errors()
    )
