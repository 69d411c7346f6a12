"""The steps of a sync run, each reading and writing the run's stored record, so an
orchestrator passes only ``run_id`` and a batch index between them:

    start_run    list and plan, apply revocations first, store the plan cut into batches
    run_batch    parse, chunk, embed and load one batch (a batch already done is skipped)
    finish_run   purge tombstoned documents, build indexes, store the run's summary

``rag.pipeline.ingest`` runs the same steps in one process; the Airflow DAG runs them as tasks.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from connectors.base import Connector
from rag.pipeline import Ingestor, IngestSummary
from rag.sync.runs import BatchRecord, RunRecord

log = logging.getLogger(__name__)


def start_run(
    ingestor: Ingestor, connector: Connector, batch_size: int, *, full_resync: bool = False
) -> RunRecord:
    """Plan the run, apply every revocation, and store the record with its batches."""
    started = datetime.now(UTC)
    run = ingestor.begin(connector, full_resync=full_resync)
    ingestor.revoke(run)
    docs = run.plan.to_process
    run.summary.run_id = RunRecord.new_id(connector.name, started)
    record = RunRecord(
        run_id=run.summary.run_id,
        source=connector.name,
        started_at=started,
        listed_at=run.listed_at,
        full_resync=full_resync,
        batch_size=batch_size,
        batch_count=(len(docs) + batch_size - 1) // batch_size,
        plan={
            "new": [d.id for d in run.plan.new],
            "changed": [d.id for d in run.plan.changed],
            "acl_only": [d.id for d in run.plan.acl_only],
            "restore": [d.id for d in run.plan.restore],
            "tombstone": [s.document_id for s in run.plan.tombstone],
            "purge": [s.document_id for s in run.plan.purge],
        },
        purge=list(run.plan.purge),
        planned=run.summary.to_json(),
        summary=run.summary.to_json(),
    )
    log_ = ingestor.run_log
    log_.put_batches(
        [
            BatchRecord(run_id=record.run_id, index=i, documents=docs[start : start + batch_size])
            for i, start in enumerate(range(0, len(docs), batch_size))
        ]
    )
    log_.put_run(record)  # after its batches: a run record always has all of them
    return record


def run_batch(ingestor: Ingestor, connector: Connector, run_id: str, index: int) -> BatchRecord:
    """Process one batch of a stored run. Safe to repeat: a batch already done is skipped, a
    failed one is tried again (its documents' states make the retry converge)."""
    log_ = ingestor.run_log
    batch = log_.get_batch(run_id, index)
    if batch.status == "done":
        return batch
    summary = IngestSummary(source=connector.name)
    try:
        ingestor.process(connector, batch.documents, summary)
        ingestor.account(summary)
    except Exception as exc:
        failed = batch.model_copy(
            update={"status": "failed", "attempts": batch.attempts + 1, "error": str(exc)[:500]}
        )
        log_.put_batches([failed])
        raise
    done = batch.model_copy(
        update={"status": "done", "attempts": batch.attempts + 1, "summary": summary.to_json()}
    )
    log_.put_batches([done])
    return done


def finish_run(ingestor: Ingestor, run_id: str) -> RunRecord:
    """Purge, build indexes and store the run's summary. Batches not done leave the run
    ``partial`` (their documents stay pending and the next run takes them up)."""
    log_ = ingestor.run_log
    record = log_.get_run(run_id)
    summary = IngestSummary.from_json(record.planned)  # finishing again recounts from the plan
    batches = log_.batches(run_id)
    for batch in batches:
        if batch.status == "done" and batch.summary is not None:
            summary.merge(IngestSummary.from_json(batch.summary))
    ingestor.purge(record.source, record.purge, summary)
    ingestor.finish(summary)
    missing = [b.index for b in batches if b.status != "done"]
    if len(batches) != record.batch_count:
        missing.append(-1)
    finished = record.model_copy(
        update={
            "status": "partial" if missing else "succeeded",
            "finished_at": datetime.now(UTC),
            "summary": summary.to_json(),
            "error": f"batches not done: {missing}" if missing else None,
        }
    )
    log_.put_run(finished)
    return finished
