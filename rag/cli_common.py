"""What the command modules share: the settings for a ``--data-dir`` option, the exit codes, and
the error boundary that turns every user-facing error into one line (no traceback, no raw
pydantic dump, no connection-retry log spam)."""

from __future__ import annotations

import json
import logging
import os
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Final

import typer
from pydantic import BaseModel, ValidationError
from pydantic_settings import SettingsError
from rich.console import Console
from rich.markup import escape
from typer import _click
from typer.core import TyperGroup

from rag.config import Settings
from rag.errors import ConfigurationError, RagError

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
"""An error: what was asked did not run, or stopped part-way (the message says why)."""
EXIT_USAGE: Final = 2
"""A bad option or argument (typer's own code)."""
EXIT_PROBLEMS: Final = 3
"""The run completed but did not do all that was asked: an incomplete listing, deletions held
back by the mass-delete guard, files quarantined, or broken policies."""

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Where the index lives (default: RAG_DATA_DIR).")
]

_ENV_PREFIX: Final = "RAG_"
_NOISY_LOGGERS: Final = ("urllib3", "opensearch", "opensearchpy")


def settings_for(data_dir: Path | None) -> Settings:
    """The settings from the environment, with ``data_dir`` when one is given. A bad ``RAG_*``
    value is a :class:`ConfigurationError` naming the variable and what it allows, one line per
    problem."""
    try:
        settings = Settings()
    except ValidationError as exc:
        raise ConfigurationError(describe_settings_error(exc)) from None
    except SettingsError as exc:
        raise ConfigurationError(describe_unparsable(exc)) from None
    return settings.model_copy(update={"data_dir": data_dir}) if data_dir else settings


# -- settings errors -------------------------------------------------------------------------


def env_name(loc: tuple[int | str, ...]) -> str:
    """The environment variable of a settings location: ``('chunking', 'max_tokens')`` is
    ``RAG_CHUNKING__MAX_TOKENS`` (list positions and map keys are part of its value)."""
    names: list[str] = []
    model: type[BaseModel] | None = Settings
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            break
        names.append(part)
        model = _model_of(model.model_fields[part].annotation)
    return _ENV_PREFIX + "__".join(names).upper()


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _section(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = Settings
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        model = _model_of(model.model_fields[part].annotation)
    return model


def _shown(value: Any, limit: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = "".join(c if c.isprintable() else "?" for c in text)
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _one(error: Any) -> str:
    loc = tuple(error["loc"])
    kind = error["type"]
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        section = _section(loc[:-1])
        known = ", ".join(sorted(section.model_fields)).upper() if section is not None else ""
        where = env_name(loc[:-1]) + "__" if loc[:-1] else _ENV_PREFIX
        return f"{where}{str(loc[-1]).upper()} is not a setting" + (
            f" ({where}* are: {known})" if known else ""
        )
    name = env_name(loc)
    if _section(loc) is not None and kind not in ("model_type", "model_attributes_type"):
        name += "__*"  # a check across the section's settings
        return f"{name}: {message}"
    secret = re.search(r"(PASSWORD|SECRET|(^|_)TOKEN)$", name) is not None  # never echoed
    got = f"={_shown(error.get('input'))}" if "input" in error and not secret else ""
    if kind in ("literal_error", "enum"):
        expected = re.findall(r"'([^']*)'", str(error.get("ctx", {}).get("expected", "")))
        return f"{name}{got} is not allowed: use one of {', '.join(expected)}"
    if kind in ("bool_parsing", "bool_type"):
        return f"{name}{got} is not allowed: use true or false"
    return f"{name}{got}: {message[:1].lower()}{message[1:]}"


def describe_settings_error(exc: ValidationError) -> str:
    """One line per invalid setting: the variable, its value, and what it allows."""
    lines = dict.fromkeys(_one(e) for e in exc.errors())
    return "\n".join(lines)


def describe_unparsable(exc: SettingsError) -> str:
    """A structured setting (a list or map) whose value is not JSON."""
    field = re.search(r'field "([^"]+)"', str(exc))
    prefix = _ENV_PREFIX + (field.group(1).upper() if field else "")
    culprits = sorted(
        name
        for name, value in os.environ.items()
        if name.upper().startswith(prefix) and _complex(name) and not _is_json(value)
    )
    where = " / ".join(culprits) or f"a {prefix}* variable"
    return (
        f"{where} is not valid JSON: lists and maps are written as JSON, "
        f"e.g. RAG_AUTH__AUDIENCE='[\"api://rag\"]'"
    )


def _complex(name: str) -> bool:
    """Whether the variable names a list, map or section (a JSON value)."""
    parts = name.upper().removeprefix(_ENV_PREFIX).lower().split("__")
    model: type[BaseModel] | None = Settings
    annotation: Any = None
    for part in parts:
        if model is None or part not in model.model_fields:
            return False
        annotation = model.model_fields[part].annotation
        model = _model_of(annotation)
    return model is not None or any(
        typing.get_origin(a) in (list, dict, tuple, set) for a in _alternatives(annotation)
    )


def _alternatives(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return list(typing.get_args(annotation))
    return [annotation]


def _is_json(value: str) -> bool:
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


# -- the boundary ----------------------------------------------------------------------------


def quiet_connection_logs(verbose: bool) -> None:
    """The HTTP clients log every failed connection attempt with a traceback at WARNING; the
    boundary reports the failure once, so they speak only with ``--verbose``."""
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.CRITICAL)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _opensearch_unreachable(exc: BaseException) -> BaseException | None:
    try:
        from opensearchpy.exceptions import ConnectionError as OpenSearchConnectionError
    except ImportError:  # pragma: no cover - a dependency
        return None
    return next((e for e in _chain(exc) if isinstance(e, OpenSearchConnectionError)), None)


def _reason(exc: BaseException) -> str:
    text = str(exc)
    errno = re.search(r"\[Errno -?\d+\] ([^)\]\n']+)", text)
    if errno:
        return errno.group(1).strip().lower()
    if "timed out" in text.lower() or "timeout" in type(exc).__name__.lower():
        return "timed out"
    if "ssl" in type(exc).__name__.lower() or "certificate" in text.lower():
        return "TLS handshake failed"
    return "connection failed"


def _opensearch_hosts() -> str:
    try:
        return ", ".join(Settings().store.opensearch.hosts)
    except (ValidationError, SettingsError):
        return "the configured hosts"


def describe_error(exc: BaseException) -> str:
    """The one-line (or one line per problem) message a user sees for ``exc``."""
    unreachable = _opensearch_unreachable(exc)
    if unreachable is not None:
        return (
            f"cannot reach OpenSearch at {_opensearch_hosts()} ({_reason(unreachable)}): is it "
            "running? Set RAG_STORE__OPENSEARCH__HOSTS to where it listens "
            "(docker compose up -d opensearch starts the bundled one)"
        )
    lines = [" ".join(line.split()) for line in str(exc).splitlines() if line.strip()]
    return "\n".join(lines) or type(exc).__name__


def print_error(err: Console, exc: BaseException) -> None:
    for line in describe_error(exc).splitlines():
        err.print(f"[red]error:[/] {escape(line)}", soft_wrap=True, highlight=False)


_ERR = Console(stderr=True)


class Boundary(TyperGroup):
    """The root command group: a :class:`RagError` (and an unreachable server) that escapes a
    command is printed as one line and exits 1; bugs keep their traceback."""

    def invoke(self, ctx: _click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RagError as exc:
            print_error(_ERR, exc)
            raise typer.Exit(EXIT_ERROR) from None
        except Exception as exc:
            if _opensearch_unreachable(exc) is None:
                raise
            print_error(_ERR, exc)
            raise typer.Exit(EXIT_ERROR) from None
