"""``rag quarantine list``: the documents that are quarantined now, with their reasons.

A run quarantines a file with a record (``<data_dir>/quarantine/<source>/<document id>.json``)
and a ``quarantined`` sync state. A later run that finds the file unchanged leaves both as they
are and no longer mentions it in its summary, so the list reads both: a record counts while its
document's state is still quarantined (a record whose document was since ingested or purged is
history), and a quarantined state without a record (the run ran on another machine) is listed
with its reason unknown.
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rag.cli_common import DataDir, settings_for
from rag.config import Settings
from rag.quarantine import Quarantine, QuarantineRecord
from rag.stores import VectorStore, build_store
from rag.sync.state import DocState

quarantine_app = typer.Typer(
    help="Documents that could not be ingested, and why.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

UNRECORDED = "no quarantine record here (the run that quarantined it ran elsewhere)"


def _current(record: QuarantineRecord, state: DocState | None) -> bool:
    """Whether ``record`` still describes its document: quarantined, or (chunks the store
    rejected) waiting to be retried."""
    if state is None:
        return False
    return state.status == "quarantined" or (
        state.status == "pending" and record.reason == "store_rejected"
    )


def current_quarantine(settings: Settings, source: str) -> list[QuarantineRecord]:
    """The records of ``source`` whose documents are still quarantined (cheap: reads the states
    of recorded documents only)."""
    records = Quarantine(settings.quarantine_dir).records(source)
    if not records:
        return []
    store = build_store(settings)
    if store.index_info() is None:
        return records  # no index to say otherwise: every record stands
    states = store.sync_state().get(source, [r.document_id for r in records])
    return [r for r in records if _current(r, states.get(r.document_id))]


def quarantine_of(
    store: VectorStore, settings: Settings, source: str
) -> list[tuple[QuarantineRecord, bool]]:
    """Every quarantined document of ``source``, with whether a record describes it (the
    unrecorded ones get a record built from their state)."""
    records = {r.document_id: r for r in Quarantine(settings.quarantine_dir).records(source)}
    if store.index_info() is None:
        return [(r, True) for r in records.values()]
    states = store.sync_state().load(source)
    found = [(r, True) for r in records.values() if _current(r, states.get(r.document_id))]
    for state in states.values():
        if state.status == "quarantined" and state.document_id not in records:
            record = QuarantineRecord(
                source=source,
                document_id=state.document_id,
                uri=state.uri,
                stage="?",
                reason="unknown",
                message=UNRECORDED,
                at=state.updated_at,
            )
            found.append((record, False))
    return sorted(found, key=lambda pair: pair[0].uri)


def register(app: typer.Typer, console: Console, err: Console) -> None:
    """Add ``rag quarantine ...`` to ``app``."""

    @quarantine_app.command("list")
    def list_command(
        source: Annotated[str | None, typer.Option("--source", help="Only this source.")] = None,
        data_dir: DataDir = None,
        as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    ) -> None:
        """The documents quarantined now (by the last run or earlier ones), with the stage
        that failed and the reason."""
        from rag.cli_sources import known_sources

        settings = settings_for(data_dir)
        store = build_store(settings)
        sources = [source] if source is not None else known_sources(store, settings)
        rows = [pair for name in sources for pair in quarantine_of(store, settings, name)]
        if as_json:
            for record, recorded in rows:
                typer.echo(json.dumps(record.model_dump(mode="json") | {"recorded": recorded}))
            return
        if not rows:
            console.print("Nothing is quarantined.")
            return
        table = Table(title="Quarantined documents")
        for column in ("source", "document", "stage", "reason", "since (UTC)", "why"):
            table.add_column(column, overflow="fold")
        for record, _ in rows:
            table.add_row(
                escape(record.source),
                escape(record.uri),
                record.stage,
                record.reason,
                record.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                escape(record.message),
            )
        console.print(table)
        console.print(f"{len(rows)} quarantined", highlight=False)

    app.add_typer(quarantine_app, name="quarantine")
