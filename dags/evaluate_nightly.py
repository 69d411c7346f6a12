"""Nightly retrieval evaluation: run each configured suite, publish its report, fail loudly on a
regression or any permission leak. The file only wires library functions."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import dag, task

# The glue module beside this file: the DAG processor puts this folder on sys.path, but the CLI
# commands that parse the folder themselves (`airflow dags list --local`) do not.
if str(Path(__file__).parent) not in sys.path:
    sys.path.append(str(Path(__file__).parent))

import rag_airflow as glue


@dag(
    dag_id="rag_evaluate_nightly",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=5)},
    tags=["rag", "evaluation"],
)
def evaluate_nightly() -> None:
    @task
    def suites() -> list[str]:
        return glue.eval_suites()

    @task(max_active_tis_per_dag=1)
    def run_suite(name: str) -> dict[str, Any]:
        return glue.run_eval_suite(name)

    run_suite.expand(name=suites())


evaluate_nightly()
