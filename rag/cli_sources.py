"""``rag sources list`` and ``rag sources delete NAME``: the sources the index holds.

A source is known from its sync state (beside the index), its ACL watermark, its run records
and its quarantine folder. Deleting one hides and removes its chunks, then its sync state, ACL
watermark and quarantine records; its run records stay as history.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Protocol, runtime_checkable

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rag.cli_common import DataDir, settings_for
from rag.config import Settings
from rag.errors import ConfigurationError
from rag.models import Acl
from rag.stores import VectorStore, build_store
from rag.sync.state import DocState

RUNS_SCANNED: Final = 1000
"""How many of the latest run records are read to find sources (with watermarks and quarantine
folders; see :func:`known_sources`)."""
STATUSES: Final = ("live", "pending", "quarantined", "tombstoned")

sources_app = typer.Typer(
    help="The sources in the index: counts, last run, ACL watermark; delete one.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@runtime_checkable
class ForgetsAclWatermarks(Protocol):
    """A store that can drop a source's ACL watermark (for ``rag sources delete``)."""

    def forget_acl_watermark(self, source: str) -> None: ...


@dataclass
class SourceInfo:
    """One source as the index knows it."""

    source: str
    documents: dict[str, int] = field(default_factory=dict)
    chunks: int = 0
    last_run_id: str | None = None
    last_run_status: str | None = None
    last_run_started_at: datetime | None = None
    acl_watermark: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("last_run_started_at", "acl_watermark"):
            value = data[key]
            data[key] = value.isoformat() if value is not None else None
        return data


def known_sources(store: VectorStore, settings: Settings) -> list[str]:
    """Every source with a watermark, a run among the latest :data:`RUNS_SCANNED`, or a
    quarantine folder; nothing when no index exists (reading creates nothing)."""
    if store.index_info() is None:
        return []
    names = set(store.acl_watermarks())
    names |= {r.source for r in store.run_log().runs(None, RUNS_SCANNED)}
    root = settings.quarantine_dir
    if root.is_dir():
        names |= {p.name for p in root.iterdir() if p.is_dir()}
    return sorted(names)


def source_info(store: VectorStore, source: str, states: dict[str, DocState]) -> SourceInfo:
    counts = Counter(s.status for s in states.values())
    info = SourceInfo(source, {status: counts.get(status, 0) for status in STATUSES})
    info.chunks = sum(len(s.chunk_ids) for s in states.values() if s.status == "live")
    runs = store.run_log().runs(source, 1)
    if runs:
        info.last_run_id, info.last_run_status = runs[0].run_id, runs[0].status
        info.last_run_started_at = runs[0].started_at
    info.acl_watermark = store.acl_watermarks().get(source)
    return info


def list_sources(settings: Settings) -> list[SourceInfo]:
    """The sources with documents in the index's sync state, by name."""
    store = build_store(settings)
    found = []
    for source in known_sources(store, settings):
        states = store.sync_state().load(source)
        if states:
            found.append(source_info(store, source, states))
    return found


@dataclass
class Deleted:
    source: str
    documents: int
    watermark: str  # "removed", "none", or why it stays
    quarantine_records: int


def delete_source(
    store: VectorStore, settings: Settings, source: str, states: dict[str, DocState]
) -> Deleted:
    """Remove ``source`` from the index. Its states are tombstoned first, so a delete cut off
    part-way leaves states that the next ``rag ingest`` rebuilds (never trusts) and that a
    second delete finishes; then each document's chunks go, then the states."""
    now = datetime.now(UTC)
    hidden = [
        s.model_copy(
            update={
                "status": "tombstoned",
                "tombstoned_at": now,
                "updated_at": now,
                "visible_acl": Acl(),
            }
        )
        for s in states.values()
    ]
    sync = store.sync_state()
    sync.put(hidden)
    for state in hidden:
        store.delete_document(state.document_id)
    sync.delete(source, [s.document_id for s in hidden])
    store.refresh()
    watermark = "none"
    if source in store.acl_watermarks():
        if isinstance(store, ForgetsAclWatermarks):
            store.forget_acl_watermark(source)
            watermark = "removed"
        else:
            watermark = f"kept ({type(store).__name__} cannot remove it; it guards no chunks)"
    records = 0
    folder = settings.quarantine_dir / source
    root = settings.quarantine_dir.resolve()
    if folder.is_dir() and folder.resolve().parent == root:
        records = len(list(folder.glob("*.json")))
        shutil.rmtree(folder)
    return Deleted(source, len(hidden), watermark, records)


def _when(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if at is not None else "-"


def register(app: typer.Typer, console: Console, err: Console) -> None:
    """Add ``rag sources ...`` to ``app``."""

    @sources_app.command("list")
    def list_command(
        data_dir: DataDir = None,
        as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    ) -> None:
        """Each source: documents live / pending / quarantined / tombstoned, chunks, last run,
        and its ACL watermark (the start of its last complete listing)."""
        infos = list_sources(settings_for(data_dir))
        if as_json:
            for info in infos:
                typer.echo(json.dumps(info.to_json()))
            return
        if not infos:
            console.print("No sources in this index.")
            return
        table = Table(title="Sources")
        for column in (
            "source",
            "live",
            "quarantined",
            "tombstoned",
            "pending",
            "chunks",
            "last run (UTC)",
            "status",
            "ACL watermark (UTC)",
        ):
            table.add_column(column)
        for i in infos:
            d = i.documents
            table.add_row(
                escape(i.source),
                *(str(d[s]) for s in ("live", "quarantined", "tombstoned", "pending")),
                str(i.chunks),
                _when(i.last_run_started_at),
                i.last_run_status or "-",
                _when(i.acl_watermark),
            )
        console.print(table)

    @sources_app.command("delete")
    def delete_command(
        name: Annotated[str, typer.Argument(help="The source to delete (rag sources list).")],
        yes: Annotated[
            bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")
        ] = False,
        data_dir: DataDir = None,
    ) -> None:
        """Remove a source's chunks, sync state, ACL watermark and quarantine records (its run
        records stay). Asks first unless --yes."""
        settings = settings_for(data_dir)
        store = build_store(settings)
        if store.index_info() is None:
            raise ConfigurationError("nothing ingested here: there is no source to delete")
        states = store.sync_state().load(name)
        quarantine = settings.quarantine_dir / name
        forgettable = isinstance(store, ForgetsAclWatermarks) and name in store.acl_watermarks()
        if not states and not forgettable and not quarantine.is_dir():
            known = ", ".join(known_sources(store, settings)) or "none"
            raise ConfigurationError(f"no source {name!r} in this index (sources: {known})")
        chunks = sum(len(s.chunk_ids) for s in states.values())
        if not yes:
            typer.confirm(
                f"Delete source {name!r}: {len(states)} documents and {chunks} chunks, with its "
                "sync state and ACL watermark?",
                abort=True,
                err=True,
            )
        done = delete_source(store, settings, name, states)
        console.print(
            f"deleted source {escape(name)}: {done.documents} documents, ACL watermark "
            f"{done.watermark}, {done.quarantine_records} quarantine records",
            highlight=False,
        )

    app.add_typer(sources_app, name="sources")
