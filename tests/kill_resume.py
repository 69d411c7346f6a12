"""Kill an ingestion with SIGKILL at fixed points of the run (checkpoint hooks, not timers),
re-run it, and compare with a clean run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from connectors.filesystem import FilesystemConnector
from rag.config import Settings
from rag.pipeline import ingest
from rag.stores import build_store
from tests.sync_contract import make_corpus, rows

_CHILD = """
import os, signal, sys
from collections import Counter
from connectors.filesystem import FilesystemConnector
from rag.config import Settings
from rag.pipeline import ingest
settings = Settings.model_validate_json(sys.argv[2])
point, nth = sys.argv[3], int(sys.argv[4])
seen = Counter()
def checkpoint(name):
    seen[name] += 1
    if name == point and seen[name] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
ingest(FilesystemConnector(sys.argv[1], "src"), settings, checkpoint=checkpoint)
print("finished", flush=True)
"""
# where the child kills itself: after the revocations, mid-batch, between batches, mid-batch
KILL_POINTS = (("revoked", 1), ("flushed", 3), ("batch", 1), ("flushed", 9))


def _settings(data: Path, backend: dict[str, Any]) -> Settings:
    return Settings.model_validate(
        {
            "data_dir": str(data),
            "embedding": {"provider": "hash", "batch_size": 2},
            "store": backend,
            "sync": {"batch_size": 40},
        }
    )


def assert_kill_and_resume(
    tmp_path: Path,
    backend: dict[str, Any],
    docs: int = 200,
    points: tuple[tuple[str, int], ...] = KILL_POINTS,
) -> None:
    root = make_corpus(tmp_path / "src", docs=docs)
    clean = _settings(tmp_path / "clean", backend_named(backend, "clean"))
    ingest(FilesystemConnector(root, "src"), clean)
    expected = rows(build_store(clean))

    killed = _settings(tmp_path / "killed", backend_named(backend, "killed"))
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    for point, nth in points:
        child = subprocess.run(
            [sys.executable, "-c", _CHILD, str(root), killed.model_dump_json(), point, str(nth)],
            capture_output=True,
            env=env,
            text=True,
            timeout=300,
            check=False,
        )
        assert child.returncode == -signal.SIGKILL, (point, nth, child.stdout, child.stderr)
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
