"""Sync the group directory (LDAP / SCIM) on its own schedule, so group changes reach queries
without any re-ingest. The file only wires a library function."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any

import rag_airflow as glue
from airflow.sdk import dag, task


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
