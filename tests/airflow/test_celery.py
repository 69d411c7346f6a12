"""The ingest DAG scaled out: its mapped batches run on two real Celery workers (Redis broker,
the CeleryExecutor, Airflow 3's api-server and scheduler, all started here) and leave the same
index as one process running ``rag.pipeline.ingest`` over the same corpus."""

from __future__ import annotations

import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.filesystem import FilesystemConnector
from rag.config import Settings
from rag.pipeline import ingest
from rag.stores.lancedb import LanceDBStore
from tests.airflow.celery_stack import CeleryStack, redis_server
from tests.airflow.conftest import DAGS
from tests.sync_contract import make_corpus, rows

REPO = DAGS.parent
DOCS, BATCH_SIZE = 40, 5
SOURCE = "scaled"
DAG_ID = f"rag_ingest_{SOURCE}"
WORKERS = ("worker-a", "worker-b")

# ACLs that differ per document: a denied user, a file moved to another group, a public one
POLICY = """allow = ["group:eng"]
deny = ["user:mallory"]
[files."note-003.md"]
inherit = false
allow = ["group:hr"]
[files."note-017.md"]
public = true
"""


def _corpus(root: Path) -> Path:
    make_corpus(root, docs=DOCS - 1)
    (root / "eng" / ".rag-acl.toml").write_text(POLICY, "utf-8")
    (root / "ops").mkdir()
    (root / "ops" / ".rag-acl.toml").write_text('allow = ["user:Dana@Example.com"]\n', "utf-8")
    (root / "ops" / "runbook.md").write_text("# Runbook\n\nRestart the subsystem gently.\n")
    return root


def _overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    start_a, end_a = (datetime.fromisoformat(a[k]) for k in ("start_date", "end_date"))
    start_b, end_b = (datetime.fromisoformat(b[k]) for k in ("start_date", "end_date"))
    return start_a < end_b and start_b < end_a


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_mapped_batches_run_on_two_celery_workers_and_match_a_single_process_run(
    tmp_path: Path,
) -> None:
    if redis_server() is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    corpus = _corpus(tmp_path / "corpus")
    data = tmp_path / "data"
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        f"sources:\n  - name: {SOURCE}\n    connector: filesystem\n"
        f"    options: {{root: {corpus}}}\n    schedule: null\n    store: lancedb\n"
        f"    batch_size: {BATCH_SIZE}\n",
        "utf-8",
    )
    env = {  # what every process of the stack gets: the DAG's source, one shared data dir
        "RAG_SOURCES_FILE": str(sources),
        "RAG_DATA_DIR": str(data),
        "RAG_EMBEDDING__PROVIDER": "hash",
        "RAG_TASK_RETRY_DELAY_SECONDS": "1",
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
    }
    expected = Settings(data_dir=tmp_path / "direct", embedding={"provider": "hash"})
    with ThreadPoolExecutor(1) as pool:  # the single-process run, while the stack starts
        direct_run = pool.submit(ingest, FilesystemConnector(corpus, SOURCE), expected)
        started = time.monotonic()
        with CeleryStack(tmp_path / "stack", DAGS, env, WORKERS, unpause=[DAG_ID]) as stack:
            up = time.monotonic() - started
            run_id = stack.trigger(DAG_ID)
            state = stack.wait_for_run(DAG_ID, run_id, timeout=240)
            tis = stack.task_instances(DAG_ID, run_id)
            ran = time.monotonic() - started - up
            assert state == "success", stack.logs()
        stopped = time.monotonic() - started - up - ran
        assert direct_run.result().documents_ingested == DOCS
    exits = {s.name: s.exited_after for s in stack.services}
    print(f"\nstack up {up:.0f}s {stack.timings}, DAG run {ran:.0f}s, stop {stopped:.0f}s {exits}")

    assert {t["state"] for t in tis} == {"success"}, tis
    batches = [t for t in tis if t["task_id"] == "process_batch"]
    assert sorted(t["map_index"] for t in batches) == list(range(DOCS // BATCH_SIZE))
    per_worker = Counter(t["hostname"] for t in batches)
    assert set(per_worker) == set(WORKERS), per_worker  # scaled out: both workers ran batches
    assert any(  # and at the same time
        _overlap(a, b) for a in batches for b in batches if a["hostname"] != b["hostname"]
    ), [(t["hostname"], t["start_date"], t["end_date"]) for t in batches]

    direct = rows(LanceDBStore(expected.store_uri, expected.store))
    scaled = Settings(data_dir=data, embedding={"provider": "hash"})
    distributed = rows(LanceDBStore(scaled.store_uri, scaled.store))
    assert len(direct) >= DOCS
    assert distributed.keys() == direct.keys()
    assert distributed == direct  # texts, vectors and ACLs, chunk by chunk
