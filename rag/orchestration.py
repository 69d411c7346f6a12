"""The steps of a scheduled sync as functions with JSON-serializable inputs and outputs, so an
orchestrator (the Airflow DAGs in ``dags/``) can run them as separate, retryable tasks:

    list_changes  -> plan the sync, apply revocations first, store the run record and batches
    process_batch -> parse, chunk, embed and load one stored batch (safe to re-run)
    finalize      -> purge tombstoned documents, build indexes, the run summary

Only ``run_id`` and a batch index pass between steps (a few hundred bytes at any corpus size):
everything else is in the run record beside the index (``rag.sync.runs``).

Each step is a process of its own in an orchestrator, so each one is observable on its own: a
span (``rag.list_changes``, ``rag.process_batch``, ``rag.finalize``, the stages' spans inside)
exported where the ``OTEL_*`` variables say (``rag.telemetry``) and flushed before the step
returns; a batch logs a progress line (done/total, rate, ETA) every few seconds to its log.

Nothing here imports an orchestrator.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from connectors.registry import build_connector
from rag import telemetry
from rag.config import Settings
from rag.pipeline import Ingestor, Progress
from rag.progress import ProgressReporter
from rag.runs import finish_run, run_batch, start_run
from rag.sources import SourceSpec, derive_settings
from rag.stores import build_store

PROGRESS_INTERVAL_SECONDS = 10.0
"""How often a batch logs its progress line."""


def _ingestor(settings: Settings, progress: Progress | None = None) -> Ingestor:
    from rag.embeddings import build_embedder

    store, embedder = build_store(settings), build_embedder(settings.embedding)
    return Ingestor(settings, store, embedder, progress)


@contextmanager
def _step(
    step: str, spec: SourceSpec, settings: Settings, **attributes: telemetry.AttributeValue
) -> Iterator[telemetry.StageSpan]:
    """The span of one step, exported before the step's process may end."""
    telemetry.configure_from_env()
    try:
        with telemetry.span(step, source=spec.name, tenant=settings.tenant, **attributes) as span:
            yield span
    finally:
        telemetry.flush()


def _connector(spec: SourceSpec) -> Any:
    return build_connector(spec.connector, spec.name, spec.options, spec.base_dir)


def list_changes(spec: SourceSpec, settings: Settings, full_resync: bool = False) -> dict[str, Any]:
    """Plan the run and apply revocations; the plan goes to the run record, not to XCom."""
    with _step("list_changes", spec, settings, full_resync=full_resync) as span:
        record = start_run(
            _ingestor(settings), _connector(spec), spec.batch_size, full_resync=full_resync
        )
        span.set(run_id=record.run_id, batches=record.batch_count)
    return {"run_id": record.run_id, "batches": record.batch_count}


def process_batch(spec: SourceSpec, settings: Settings, run_id: str, index: int) -> dict[str, Any]:
    """One batch of a stored run (a batch already done is not redone); its progress is logged
    every :data:`PROGRESS_INTERVAL_SECONDS`."""
    label = f"{spec.name} batch {index}"
    with (
        _step("process_batch", spec, settings, run_id=run_id, batch=index),
        ProgressReporter(label, interactive=False, interval=PROGRESS_INTERVAL_SECONDS) as progress,
    ):
        batch = run_batch(_ingestor(settings, progress), _connector(spec), run_id, index)
    return {"run_id": run_id, "batch": index, "status": batch.status}


def finalize(spec: SourceSpec, settings: Settings, run_id: str) -> dict[str, Any]:
    """Purge, indexes, the run's summary; the record says which batches are done."""
    with _step("finalize", spec, settings, run_id=run_id) as span:
        record = finish_run(_ingestor(settings), run_id)
        span.set(status=record.status)
    return {
        "run_id": run_id,
        "status": record.status,
        "error": record.error,
        "summary": record.summary,
    }


def settings_from_connections(
    base: Settings,
    opensearch: dict[str, Any] | None = None,
    aws: dict[str, Any] | None = None,
) -> Settings:
    """Fold orchestrator connections (plain fields: host, port, schema, login, password, extra)
    into the settings: an OpenSearch connection sets hosts and credentials; an AWS connection
    sets the region of Bedrock, SageMaker and SigV4 (credentials stay with boto3's chain).
    Secrets the connections do not replace (an OpenSearch password from the environment) are
    kept as they are."""
    os_data: dict[str, Any] = {}
    if opensearch and opensearch.get("host"):
        extra = opensearch.get("extra") or {}
        scheme = opensearch.get("schema") or ("https" if extra.get("use_ssl") else "http")
        host = opensearch["host"]
        if "://" not in host:
            host = f"{scheme}://{host}:{opensearch.get('port') or 9200}"
        os_data["hosts"] = [host]
        if opensearch.get("login"):
            os_data["username"] = opensearch["login"]
            os_data["password"] = opensearch.get("password")
        for key in ("verify_certs", "aws_sigv4", "aws_service", "aws_region"):
            if key in extra:
                os_data[key] = extra[key]
    overrides: dict[str, Any] = {"store": {"opensearch": os_data}}
    if aws:
        region = (aws.get("extra") or {}).get("region_name")
        if region:
            overrides["embedding"] = {
                "bedrock": {"region": region},
                "sagemaker": {"region": region},
            }
            if not os_data.get("aws_region", base.store.opensearch.aws_region):
                os_data["aws_region"] = region
    return derive_settings(base, overrides)
