"""Sync the group directory (LDAP / SCIM) on its own schedule, so group changes reach queries
without any re-ingest. The file only wires a library function."""

from __future__ import annotations

import os
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
    dag_id="rag_directory_sync",
    schedule=os.environ.get("RAG_DIRECTORY_SCHEDULE", "*/15 * * * *"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=glue.RETRY_DELAY_SECONDS)},
    tags=["rag", "directory"],
)
def rag_directory_sync() -> None:
    @task
    def sync() -> dict[str, Any]:
        return glue.sync_directory()

    sync()


rag_directory_sync()
