"""The steps of a scheduled sync as functions with JSON-serializable inputs and outputs, so an
orchestrator (the Airflow DAGs in ``dags/``) can run them as separate, retryable tasks:

    list_changes  -> plan the sync, apply revocations first, cut the work into batches
    process_batch -> parse, chunk, embed and load one batch (safe to re-run)
    finalize      -> purge tombstoned documents, build indexes, the run summary

Nothing here imports an orchestrator.
"""

from __future__ import annotations

from typing import Any

from connectors.registry import build_connector
from rag.config import Settings
from rag.models import SourceDocument
from rag.pipeline import Ingestor, IngestSummary
from rag.sources import SourceSpec, derive_settings
from rag.stores import build_store
from rag.sync import DocState


def _ingestor(settings: Settings) -> Ingestor:
    from rag.embeddings import build_embedder

    return Ingestor(settings, build_store(settings), build_embedder(settings.embedding))


def _connector(spec: SourceSpec) -> Any:
    return build_connector(spec.connector, spec.name, spec.options, spec.base_dir)


def list_changes(spec: SourceSpec, settings: Settings, full_resync: bool = False) -> dict[str, Any]:
    ingestor = _ingestor(settings)
    run = ingestor.begin(_connector(spec), full_resync=full_resync)
    ingestor.revoke(run)
    docs = run.plan.to_process
    size = spec.batch_size
    return {
        "source": spec.name,
        "batches": [
            [d.model_dump(mode="json") for d in docs[i : i + size]]
            for i in range(0, len(docs), size)
        ],
        "purge": [s.model_dump(mode="json") for s in run.plan.purge],
        "summary": run.summary.to_json(),
    }


def process_batch(
    spec: SourceSpec, settings: Settings, batch: list[dict[str, Any]]
) -> dict[str, Any]:
    ingestor = _ingestor(settings)
    summary = IngestSummary(source=spec.name)
    documents = [SourceDocument.model_validate(d) for d in batch]
    ingestor.process(_connector(spec), documents, summary)
    ingestor.account(summary)
    return summary.to_json()


def finalize(
    spec: SourceSpec, settings: Settings, listed: dict[str, Any], batches: list[dict[str, Any]]
) -> dict[str, Any]:
    ingestor = _ingestor(settings)
    summary = IngestSummary.from_json(listed["summary"])
    for part in batches:
        if part:
            summary.merge(IngestSummary.from_json(part))
    purge = [DocState.model_validate(s) for s in listed["purge"]]
    ingestor.purge(spec.name, purge, summary)
    return ingestor.finish(summary).to_json()


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
