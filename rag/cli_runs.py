"""``rag runs``: recent sync runs with their status and summary."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from rag.cli_common import DataDir, print_error, settings_for
from rag.errors import RagError
from rag.stores import build_store


def register(app: typer.Typer, console: Console, err: Console) -> None:
    @app.command("runs")
    def runs_command(
        source: Annotated[str | None, typer.Option("--source", help="Only this source.")] = None,
        limit: Annotated[int, typer.Option("--limit", min=1, help="How many runs.")] = 20,
        data_dir: DataDir = None,
        as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    ) -> None:
        """Recent sync runs, latest first: status, batches, what they did."""
        settings = settings_for(data_dir)
        try:
            store = build_store(settings)
            found = store.index_info() is not None
            records = store.run_log().runs(source, limit) if found else []
        except RagError as exc:
            print_error(err, exc)
            raise typer.Exit(1) from exc
        if as_json:
            for record in records:
                typer.echo(json.dumps(record.model_dump(mode="json", exclude={"purge", "plan"})))
            return
        table = Table(title="Sync runs")
        for column in (
            "started (UTC)",
            "source",
            "status",
            "batches",
            "new/changed",
            "acl-only",
            "tombstoned",
            "quarantined",
            "oldest ACL",
            "run id",
        ):
            table.add_column(column)
        for r in records:
            s = r.summary
            age = s.get("oldest_acl_age_seconds")
            table.add_row(
                r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
                r.source,
                r.status,
                str(r.batch_count),
                f"{s.get('new', 0)}/{s.get('changed', 0)}",
                str(s.get("acl_only", 0)),
                str(s.get("tombstoned", 0)),
                str(len(s.get("quarantined", []))),
                "-" if age is None else f"{age:.0f} s",
                r.run_id,
            )
        console.print(table)
