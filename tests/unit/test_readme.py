"""The README's flow, run as written: its shell commands in order on a clean data dir, then its
Python snippets. A README that drifts from the code (a renamed option, a data dir the next
command does not read, a snippet that finds nothing) fails here."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rag.cli import app

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

NOT_RUN = {
    "serve-embeddings": "serves until stopped (its options are checked in test_cli_options.py)",
    "eval": "needs the SciFact data and minutes (tests/suites runs the suites)",
}
"""README commands the flow checks but does not run, and why."""

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_INLINE = re.compile(r"(?<!`)`([^`]+)`(?!`)")
_EXIT = re.compile(r"\bexit (\d+)\b")


@dataclass(frozen=True)
class Command:
    """One ``rag`` command line of the README."""

    args: tuple[str, ...]
    expected_exit: int
    text: str


def blocks(language: str, text: str | None = None) -> list[str]:
    """The README's fenced blocks in ``language``, in order."""
    source = README.read_text("utf-8") if text is None else text
    return [body for lang, body in _FENCE.findall(source) if lang == language]


def rag_args(line: str) -> tuple[str, ...] | None:
    """The arguments of a ``rag`` command line (``uv run rag``, ``.venv/bin/rag`` too), with
    ``[optional]`` brackets dropped; None for any other line."""
    words = shlex.split(line.replace("[", " ").replace("]", " "), comments=True)
    while words and words[0] in ("uv", "run"):
        words = words[1:]
    if not words or words[0].rsplit("/", 1)[-1] != "rag":
        return None
    return tuple(words[1:])


def commands(text: str | None = None) -> list[Command]:
    """Every ``rag`` line of the README's bash blocks, in order; ``make demo`` as the command
    its Makefile recipe runs. A trailing comment ``exit N`` is the exit code the line has."""
    found: list[Command] = []
    for block in blocks("bash", text):
        for line in block.splitlines():
            code = line.split("#", 1)[1] if "#" in line else ""
            expected = int(m.group(1)) if (m := _EXIT.search(code)) else 0
            if line.split("#", 1)[0].split() == ["make", "demo"]:
                found.extend(Command(args, expected, line) for args in make_recipe("demo"))
                continue
            args = rag_args(line)
            if args is not None:
                found.append(Command(args, expected, line.strip()))
    return found


def inline_commands(text: str | None = None) -> list[tuple[str, ...]]:
    """The ``rag ...`` commands written in inline code in the README's prose."""
    source = README.read_text("utf-8") if text is None else text
    source = _FENCE.sub("", source)
    spans = (" ".join(s.split()) for s in _INLINE.findall(source))
    return [args for s in spans if s.startswith("rag ") and (args := rag_args(s)) is not None]


def inline_options(text: str | None = None) -> list[str]:
    """Options named on their own in inline code (``--dry-run``, ``--user/--group``)."""
    source = README.read_text("utf-8") if text is None else text
    spans = [s.strip() for s in _INLINE.findall(_FENCE.sub("", source))]
    return [o.split()[0] for s in spans if s.startswith("--") for o in s.split("/")]


def make_recipe(target: str) -> list[tuple[str, ...]]:
    """The ``rag`` commands a Makefile target runs (``$(VENV)/bin/rag demo``)."""
    text = (ROOT / "Makefile").read_text("utf-8")
    match = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", text, re.MULTILINE)
    assert match, f"no Makefile target {target}"
    lines = [line.strip().replace("$(VENV)/bin/", "") for line in match.group(1).splitlines()]
    return [args for line in lines if (args := rag_args(line)) is not None]


# -- the parsers themselves ------------------------------------------------------------------


def test_the_extraction_reads_commands_exit_codes_and_make() -> None:
    text = (
        "Run `rag runs [--source S]` or `rag directory show\nalice`; `--user/--group`.\n"
        "```bash\nmake demo\nsource .venv/bin/activate\n"
        'rag query "a b" --k 3   # exit 3: why\nuv run rag sources list\n```\n'
        "```python\nx = 1\n```\n"
    )
    assert [(c.args, c.expected_exit) for c in commands(text)] == [
        (("demo",), 0),
        (("query", "a b", "--k", "3"), 3),
        (("sources", "list"), 0),
    ]
    assert inline_commands(text) == [("runs", "--source", "S"), ("directory", "show", "alice")]
    assert inline_options(text) == ["--user", "--group"]
    assert blocks("python", text) == ["x = 1\n"]


def test_the_readme_has_a_flow() -> None:
    names = [c.args[0] for c in commands()]
    assert names[0] == "demo"  # make demo comes first
    assert {"query", "ingest", "sources", "quarantine"} <= set(names)
    assert set(NOT_RUN) <= set(names)  # drop an entry here when its line leaves the README
    assert len(blocks("python")) >= 2


# -- the flow --------------------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture
def clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The repository as the working directory, a fresh data dir, the cheap hash embedder."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAG_EMBEDDING__PROVIDER", "hash")
    return tmp_path


def _run_python(snippet: str, namespace: dict[str, Any]) -> dict[str, Any]:
    exec(compile(snippet, str(README), "exec"), namespace)  # the README's own code
    return namespace


@pytest.mark.slow  # ingests the demo corpus (PDF, Office, e-mail): several seconds
def test_the_readme_flow_runs_as_written(
    clean: Path, monkeypatch: pytest.MonkeyPatch, idp_server: Any
) -> None:
    for command in commands():
        if command.args[0] in NOT_RUN:
            continue
        result = runner.invoke(app, list(command.args), env={"COLUMNS": "200"})
        assert result.exit_code == command.expected_exit, (command.text, result.output)
        if command.args[0] == "query":
            if "--json" in command.args:
                assert json.loads(result.stdout)["hits"], command.text
            else:
                assert "No results" not in result.stdout, command.text

    langchain, token = blocks("python")[:2]
    docs = _run_python(langchain, {})["docs"]
    assert docs, "the LangChain snippet found nothing after the README's commands"
    assert all(d.metadata["source"].startswith(("hr/", "public/")) for d in docs)

    from tests.unit.test_auth import AUDIENCE, make_token

    monkeypatch.setenv("RAG_AUTH__ISSUER", idp_server.issuer)
    monkeypatch.setenv("RAG_AUTH__AUDIENCE", json.dumps([AUDIENCE]))
    bearer = make_token(idp_server, sub="alice", groups=["hr"])
    docs = _run_python(token, {"bearer_token": bearer})["docs"]
    assert docs and all(d.metadata["source"].startswith(("hr/", "public/")) for d in docs)
