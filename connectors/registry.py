"""Builds a connector from its declaration in a sources file."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, cast

from connectors.base import Connector
from connectors.filesystem import FilesystemConnector
from rag.errors import ConfigurationError


def build_connector(kind: str, name: str, options: dict[str, Any], base_dir: Path) -> Connector:
    """``filesystem`` (options: root, case_sensitive_ids), or ``package.module:ClassName``
    called with ``name=`` and the options as keyword arguments."""
    if kind == "filesystem":
        if "root" not in options:
            raise ConfigurationError(f"source {name}: the filesystem connector needs options.root")
        root = Path(options["root"])
        unknown = set(options) - {"root", "case_sensitive_ids"}
        if unknown:
            raise ConfigurationError(f"source {name}: unknown filesystem options {sorted(unknown)}")
        return FilesystemConnector(
            root if root.is_absolute() else base_dir / root,
            name,
            case_sensitive_ids=bool(options.get("case_sensitive_ids", False)),
        )
    if ":" in kind:
        module_name, _, attr = kind.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigurationError(f"source {name}: cannot load connector {kind}: {exc}") from exc
        return cast(Connector, factory(name=name, **options))
    raise ConfigurationError(f"source {name}: unknown connector {kind!r}")
