"""One ingestion DAG per source declared in sources.yaml: list changes -> mapped batches ->
finalize. The file only wires library functions; all work happens inside the tasks.

A bad entry never takes the other sources' DAGs down: it gets a DAG of its own id (or
``rag_ingest__entry-<position>`` when it has no valid name) tagged ``broken-config``, whose one
task fails with the reason, and sources_check.py raises the same reasons as its import error.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task
from airflow.sdk.definitions.dag import DAG

# The glue module beside this file: the DAG processor puts this folder on sys.path, but the CLI
# commands that parse the folder themselves (`airflow dags list --local`) do not.
if str(Path(__file__).parent) not in sys.path:
    sys.path.append(str(Path(__file__).parent))

import rag_airflow as glue

DEFAULT_ARGS = {
    "retries": 3,
    "retry_delay": timedelta(seconds=glue.RETRY_DELAY_SECONDS),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
}


def build(source: str, schedule: str | None) -> DAG:
    @dag(
        dag_id=f"rag_ingest_{source}",
        schedule=schedule,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        params={
            "full_resync": Param(False, type="boolean", description="Re-process every document.")
        },
        tags=["rag", "ingest"],
    )
    def ingest() -> None:
        @task
        def list_changes() -> dict[str, Any]:
            full = bool(get_current_context()["params"]["full_resync"])
            return glue.list_changes(source, full)

        @task
        def batches(listed: dict[str, Any]) -> list[int]:
            return list(range(int(listed["batches"])))

        @task(pool=glue.EMBEDDING_POOL, max_active_tis_per_dag=4)
        def process_batch(listed: dict[str, Any], index: int) -> dict[str, Any]:
            return glue.process_batch(source, str(listed["run_id"]), index)

        @task(trigger_rule="all_done")
        def finalize(listed: dict[str, Any]) -> dict[str, Any]:
            return glue.finalize(source, str(listed["run_id"]))

        listed = list_changes()
        processed = process_batch.partial(listed=listed).expand(index=batches(listed))
        processed >> finalize(listed)

    return ingest()


def broken(dag_id: str, problem: str) -> DAG:
    """The DAG of a bad entry: it keeps the source's DAG (and its history) in the UI, says what
    is wrong, and fails with that if triggered. It has no schedule: nothing is known to run."""

    @dag(
        dag_id=dag_id,
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        description=f"broken configuration: {problem}"[:1000],
        doc_md=f"**This source's entry in the sources file is invalid.**\n\n```\n{problem}\n```",
        tags=["rag", "ingest", "broken-config"],
    )
    def broken_source() -> None:
        @task(retries=0)
        def configuration_error(problem: str) -> None:
            glue.refuse(problem)

        configuration_error(problem)

    return broken_source()


_sources = glue.sources()
for _spec in _sources.specs:
    globals()[f"rag_ingest_{_spec.name}"] = build(_spec.name, _spec.schedule)
_broken: dict[str, list[str]] = {}  # entries sharing a name share their DAG
for _problem in _sources.problems:
    _id = f"rag_ingest_{_problem.name or f'_entry-{_problem.position}'}"
    _broken.setdefault(_id, []).append(str(_problem))
for _id, _reasons in _broken.items():
    globals()[_id] = broken(_id, "\n".join(_reasons))
