"""Builds a connector from its declaration in a sources file, or from a CLI target.

Each built-in kind names a factory ``module:function`` called as ``factory(name, options,
base_dir)``; a connector module owns the validation of its own options. The modules are imported
only when their kind is used, so a folder-only install never imports boto3 or msal.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol, cast

from connectors.base import Connector
from rag.errors import ConfigurationError

BUILT_IN: dict[str, str] = {
    "filesystem": "connectors.filesystem:from_options",
    "s3": "connectors.s3:from_options",
    "sharepoint": "connectors.sharepoint:from_options",
    "manifest": "connectors.manifest:from_options",
}


class ConnectorFactory(Protocol):
    def __call__(self, name: str, options: dict[str, Any], base_dir: Path) -> Connector: ...


def build_connector(kind: str, name: str, options: dict[str, Any], base_dir: Path) -> Connector:
    """A built-in kind (:data:`BUILT_IN`), or ``package.module:ClassName`` called with ``name=``
    and the options as keyword arguments."""
    if kind in BUILT_IN:
        factory = cast(ConnectorFactory, _load(BUILT_IN[kind], name))
        return factory(name, dict(options), base_dir)
    if ":" in kind:
        return cast(Connector, _load(kind, name)(name=name, **options))
    known = ", ".join(sorted(BUILT_IN))
    raise ConfigurationError(
        f"source {name}: unknown connector {kind!r} (built in: {known}, or package.module:Class)"
    )


def connector_for_target(target: str, name: str | None) -> Connector:
    """What ``rag ingest TARGET`` reads: ``s3://bucket/prefix``, a ``.jsonl`` push manifest, or a
    folder. ``name`` defaults to the bucket, the manifest's stem, or the folder's name."""
    if target.startswith("s3://"):
        bucket = target[len("s3://") :].partition("/")[0]
        if not bucket:
            raise ConfigurationError(f"{target}: no bucket in the S3 URL")
        return build_connector("s3", name or bucket, {"url": target}, Path.cwd())
    path = Path(target)
    if path.suffix == ".jsonl":
        if not path.is_file():
            raise ConfigurationError(f"{target}: no such manifest file")
        return build_connector("manifest", name or path.stem, {"path": str(path)}, Path.cwd())
    if not path.is_dir():
        raise ConfigurationError(
            f"{target}: not a folder, an s3://bucket/prefix URL or a .jsonl manifest"
        )
    resolved = path.resolve()
    return build_connector("filesystem", name or resolved.name, {"root": str(resolved)}, Path.cwd())


def _load(spec: str, name: str) -> Any:
    module_name, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"source {name}: cannot load connector {spec}: {exc}") from exc
