"""One ingestion DAG per source declared in sources.yaml: list changes -> mapped batches ->
finalize. The file only wires library functions; all work happens inside the tasks."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import rag_airflow as glue
from airflow.sdk import Param, dag, get_current_context, task
from airflow.sdk.definitions.dag import DAG

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


for _spec in glue.sources():
    globals()[f"rag_ingest_{_spec.name}"] = build(_spec.name, _spec.schedule)
