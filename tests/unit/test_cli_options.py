"""The CLI's options: each has a long form and help, help pages show no ``<bool>`` placeholder,
and every ``rag ...`` command in the README uses only commands and options the CLI has."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from rag.cli import app
from tests.unit.test_readme import commands, inline_commands, inline_options

runner = CliRunner()
ROOT_COMMAND: Any = typer.main.get_command(app)


def walk(
    command: Any = ROOT_COMMAND, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command and group with its path of names (the root's path is empty)."""
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from walk(sub, (*path, name))


def options(command: Any) -> list[Any]:
    return [p for p in command.params if p.param_type_name == "option"]


def resolve(args: tuple[str, ...]) -> tuple[Any, list[str], tuple[str, ...]]:
    """The command ``args`` names, the options used on the way, and the command's own args."""
    command, used, rest = ROOT_COMMAND, [], list(args)
    while rest and hasattr(command, "commands"):
        word = rest.pop(0)
        if word.startswith("-"):
            used.append(word)
            continue
        assert word in command.commands, f"rag has no command {word!r} ({' '.join(args)})"
        command, used = command.commands[word], []
    return command, used, tuple(rest)


def names(command: Any) -> set[str]:
    return {n for p in options(command) for n in (*p.opts, *p.secondary_opts)} | {"--help"}


def test_every_option_has_a_long_form_and_help() -> None:
    for path, command in walk():
        for option in options(command):
            label = f"rag {' '.join(path)} {option.name}"
            assert any(o.startswith("--") for o in (*option.opts, *option.secondary_opts)), label
            assert option.help and option.help.strip(), f"{label} has no help"
        assert command.help or path == (), f"rag {' '.join(path)} has no help"


def help_text(path: tuple[str, ...]) -> str:
    """The help page of ``rag <path>`` (rendered in-process, without running anything)."""
    from typer import _click

    ctx = _click.Context(ROOT_COMMAND, info_name="rag", terminal_width=120)
    command = ROOT_COMMAND
    for name in path:
        command = command.commands[name]
        ctx = _click.Context(command, info_name=name, parent=ctx, terminal_width=120)
    return str(command.get_help(ctx))


def test_help_pages_show_no_type_placeholder_for_flags() -> None:
    for path, _ in walk():
        text = help_text(path)
        assert "Usage: rag" in text and "<bool>" not in text, (path, text)


def test_query_has_the_retrieval_options() -> None:
    query, _, _ = resolve(("query",))
    assert {"--k", "-k", "--mode", "--min-score", "--filter", "--where", "--json"} <= names(query)
    serve, _, _ = resolve(("serve-embeddings",))
    assert "--model-dir" in names(serve)


def test_ingest_help_documents_the_exit_codes() -> None:
    result = runner.invoke(app, ["ingest", "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    text = result.output
    for code, meaning in [("0", "completed"), ("1", "error"), ("2", "usage"), ("3", "problems")]:
        assert re.search(rf"^\s+{code}\s+.*{meaning}", text, re.MULTILINE), text
    assert "RAG_SYNC__ALLOW_MASS_DELETE=true" in text and "rag quarantine list" in text


def _check(args: tuple[str, ...], parse: bool) -> None:
    command, used, rest = resolve(args)
    for word in [*used, *rest]:
        if word.startswith("-") and word != "-":
            known = names(command) if word not in used else names(ROOT_COMMAND)
            assert word.split("=", 1)[0] in known, f"rag {' '.join(args)}: no option {word}"
    if parse:  # types, choices, required values: the line parses as the CLI reads it
        command.make_context(" ".join(args), list(rest), resilient_parsing=False).close()


def test_the_readme_commands_use_only_options_the_cli_has() -> None:
    fenced = commands()
    assert fenced, "no rag commands in the README"
    for command in fenced:
        _check(command.args, parse=command.args[0] != "serve-embeddings")
    for args in inline_commands():
        _check(args, parse=False)  # prose: placeholders such as NAME or "..."
    everywhere = set().union(*(names(c) for _, c in walk()))
    for option in inline_options():
        assert option in everywhere, f"the README names {option}, which no command has"


@pytest.mark.parametrize(
    "line", ["query x --user a --kay 3", "sources remove s", "ingest --dryrun x"]
)
def test_the_check_catches_drift(line: str) -> None:
    with pytest.raises(AssertionError):
        _check(tuple(line.split()), parse=False)


def test_serve_embeddings_refuses_a_missing_model_dir(tmp_path: Any) -> None:
    result = runner.invoke(app, ["serve-embeddings", "--model-dir", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "does not exist" in result.output
