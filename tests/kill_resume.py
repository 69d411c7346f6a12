"""Kill an ingestion with SIGKILL mid-run, re-run it, and compare with a clean run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from connectors.filesystem import FilesystemConnector
from rag.config import Settings
from rag.pipeline import ingest
from rag.stores import build_store
from tests.sync_contract import make_corpus, rows

_CHILD = """
import sys
from connectors.filesystem import FilesystemConnector
from rag.config import Settings
from rag.pipeline import ingest
settings = Settings.model_validate_json(sys.argv[2])
print("started", flush=True)
ingest(FilesystemConnector(sys.argv[1], "src"), settings)
print("finished", flush=True)
"""


def _settings(data: Path, backend: dict[str, Any]) -> Settings:
    return Settings.model_validate(
        {
            "data_dir": str(data),
            "embedding": {"provider": "hash", "batch_size": 2},
            "store": backend,
        }
    )


def assert_kill_and_resume(tmp_path: Path, backend: dict[str, Any], docs: int = 400) -> None:
    root = make_corpus(tmp_path / "src", docs=docs)
    clean = _settings(tmp_path / "clean", backend_named(backend, "clean"))
    ingest(FilesystemConnector(root, "src"), clean)
    expected = rows(build_store(clean))

    killed = _settings(tmp_path / "killed", backend_named(backend, "killed"))
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    kills = 0
    for delay in (1.0, 2.0, 3.5):
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(root), killed.model_dump_json()],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "started"
        time.sleep(delay)
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            kills += 1
        child.wait()
    assert kills >= 1, "the run finished before it could be killed; use a bigger corpus"
    ingest(FilesystemConnector(root, "src"), killed)
    got = rows(build_store(killed))
    assert got.keys() == expected.keys()  # same chunk ids: no orphans, nothing missing
    assert got == expected  # same text, vectors and ACLs
    assert build_store(killed).count() == len(expected)  # no duplicates


def backend_named(backend: dict[str, Any], suffix: str) -> dict[str, Any]:
    if backend.get("backend") != "opensearch":
        return backend
    data = json.loads(json.dumps(backend))
    data["opensearch"]["alias"] = f"{data['opensearch']['alias']}-{suffix}"
    return data
