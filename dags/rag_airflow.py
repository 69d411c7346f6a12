"""Glue between Airflow and the library, used by the DAG files (not a DAG file itself).

Task callables build the settings inside the task (environment, the source's overrides, and
the Airflow Connections ``opensearch_default`` and ``aws_default`` when they exist) and call the
orchestrator-free functions of ``rag.orchestration``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# What shapes the DAGs is read at parse time (the sources file, the pool, retry delays);
# everything a task needs (connections, suites, report folder, settings) inside the task.
EMBEDDING_POOL = os.environ.get("RAG_EMBEDDING_POOL", "rag_embedding")
RETRY_DELAY_SECONDS = float(os.environ.get("RAG_TASK_RETRY_DELAY_SECONDS", "30"))


def _sources_file() -> Path:
    return Path(os.environ.get("RAG_SOURCES_FILE", Path(__file__).with_name("sources.yaml")))


def sources() -> Any:
    """The declared sources, each entry validated on its own (``rag.sources.Sources``). Read at
    DAG-parse time: a small YAML file and the environment's settings, nothing else."""
    from pydantic import ValidationError

    from rag.config import Settings
    from rag.errors import ConfigurationError
    from rag.sources import load_sources

    try:
        base = Settings()
    except ValidationError as exc:  # no source could run: ingest.py's import error says why
        raise ConfigurationError(f"the RAG_ environment variables are invalid: {exc}") from exc
    return load_sources(_sources_file(), base)


def check_sources() -> None:
    """Raise the bad entries of the sources file, one a line (sources_check.py's import error).
    A file that cannot be read at all, or an invalid environment, is ingest.py's import error,
    so it is not raised twice."""
    from rag.errors import ConfigurationError

    try:
        report = sources().report()
    except ConfigurationError:
        return
    if report:
        raise ConfigurationError(report)


def refuse(problem: str) -> None:
    """The one task of a bad entry's DAG: fail with what is wrong."""
    from rag.errors import ConfigurationError

    raise ConfigurationError(f"this source is not configured correctly: {problem}")


def _connection(conn_id: str) -> dict[str, Any] | None:
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = Connection.get(conn_id)
    except AirflowNotFoundException:  # an undefined connection: the settings keep their defaults
        return None
    return {
        "host": conn.host,
        "port": conn.port,
        "schema": conn.schema,
        "login": conn.login,
        "password": conn.password,
        "extra": conn.extra_dejson,
    }


def _context(name: str) -> tuple[Any, Any]:
    from rag.config import Settings
    from rag.orchestration import settings_from_connections

    spec = sources().get(name)  # a bad or removed entry fails the task, saying why
    settings = settings_from_connections(spec.settings_over(Settings()), *_connections())
    return spec, settings


def list_changes(source: str, full_resync: bool = False) -> dict[str, Any]:
    from rag.orchestration import list_changes as run

    spec, settings = _context(source)
    return run(spec, settings, full_resync)


def process_batch(source: str, run_id: str, index: int) -> dict[str, Any]:
    from rag.orchestration import process_batch as run

    spec, settings = _context(source)
    return run(spec, settings, run_id, index)


def finalize(source: str, run_id: str) -> dict[str, Any]:
    from rag.orchestration import finalize as run

    spec, settings = _context(source)
    result = run(spec, settings, run_id)
    if result["status"] != "succeeded":  # the good batches' work is kept; the rest stays pending
        raise RuntimeError(f"sync run {run_id} is {result['status']}: {result['error']}")
    return result


def _connections() -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The OpenSearch and AWS connections (ids from RAG_OPENSEARCH_CONN_ID, RAG_AWS_CONN_ID)."""
    opensearch = os.environ.get("RAG_OPENSEARCH_CONN_ID", "opensearch_default")
    aws = os.environ.get("RAG_AWS_CONN_ID", "aws_default")
    return _connection(opensearch), _connection(aws)


def eval_suites() -> list[str]:
    suites = os.environ.get("RAG_EVAL_SUITES", "scifact-nightly")
    return [name.strip() for name in suites.split(",") if name.strip()]


def run_eval_suite(name: str) -> dict[str, Any]:
    """Run one suite and publish its report; fail the task on any leak or regression."""
    from evaluation.report import write_report
    from evaluation.runner import run_suite
    from evaluation.suite import load_suite
    from rag.config import Settings
    from rag.orchestration import settings_from_connections

    reports = Path(os.environ.get("RAG_REPORTS_DIR", "reports"))
    base = settings_from_connections(Settings(), *_connections())
    result = run_suite(load_suite(name), reports, base.data_dir / "eval", base)
    result.feedback = feedback_rates(base)
    report = write_report(result, reports)
    summary = {
        "suite": name,
        "passed": result.passed,
        "leaks": result.leaks,
        "headline": result.headline(),
        "report": str(report),
        "failures": result.failures,
    }
    if not result.passed:
        raise RuntimeError(f"evaluation suite {name} failed: {result.failures}")
    return summary


def sync_directory() -> dict[str, Any]:
    """One directory sync; fails the task when the snapshot could not be applied."""
    from rag.config import Settings
    from rag.directory import sync_directory as run

    settings = Settings()
    if settings.directory.backend == "none":
        return {"skipped": "no directory configured (RAG_DIRECTORY__BACKEND)"}
    summary = run(settings)
    if not summary.applied:
        raise RuntimeError(f"directory snapshot not applied: {summary.errors}")
    return summary.model_dump(mode="json", exclude={"added_memberships", "removed_memberships"})


def feedback_rates(settings: Any, days: float = 7.0) -> list[dict[str, Any]]:
    """The users' helpful rate per source and mode over the last ``days`` (audit trail)."""
    from datetime import UTC, datetime, timedelta

    from evaluation.feedback import helpful_rates
    from rag.audit import build_audit_sink

    sink = build_audit_sink(settings)
    if sink is None:
        return []
    since = datetime.now(UTC) - timedelta(days=days)
    return [r.to_json() for r in helpful_rates(sink, since)]
