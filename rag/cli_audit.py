"""``rag audit`` and ``rag feedback``: read the retrieval audit trail, record a user's verdict."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from rag.audit import build_audit_sink
from rag.cli_common import DataDir, print_error, settings_for
from rag.errors import ConfigurationError, RagError
from rag.identity import canonical_id

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """``30m``, ``1h``, ``7d`` before now, or an ISO 8601 time (UTC if it names no zone)."""
    now = now or datetime.now(UTC)
    match = _DURATION.match(value.strip())
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        at = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise ConfigurationError(f"--since {value!r}: expected 30m, 1h, 7d or an ISO time") from exc
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def register(app: typer.Typer, console: Console, err: Console) -> None:
    """Add the audit commands to ``app``."""

    @app.command("audit")
    def audit_command(
        user: Annotated[
            str | None, typer.Option("--user", "-u", help="Only this user's retrievals.")
        ] = None,
        since: Annotated[
            str, typer.Option("--since", help="How far back: 30m, 1h, 7d or an ISO time.")
        ] = "24h",
        data_dir: DataDir = None,
        as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    ) -> None:
        """Who retrieved what: the audit trail of retrievals."""
        try:
            sink = build_audit_sink(settings_for(data_dir))
            if sink is None:
                raise ConfigurationError("the audit trail is off (RAG_AUDIT__ENABLED=false)")
            who = canonical_id(user) if user is not None else None
            records = list(sink.records(user_id=who, since=parse_since(since)))
        except RagError as exc:
            print_error(err, exc)
            raise typer.Exit(1) from exc
        if as_json:
            for record in records:
                typer.echo(record.model_dump_json())
            return
        table = Table(title=f"Retrievals since {since}")
        for column in ("time (UTC)", "user", "mode", "k", "hits", "ms", "audit id"):
            table.add_column(column)
        for r in records:
            at = r.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
            row = (at, r.user_id, r.mode, str(r.k), str(len(r.hits)), f"{r.latency_ms:.1f}", r.id)
            table.add_row(*row)
        console.print(table)

    @app.command("feedback")
    def feedback_command(
        audit_id: Annotated[str, typer.Argument(help="The audit id the retrieval returned.")],
        helpful: Annotated[
            bool, typer.Option("--helpful/--not-helpful", help="The user's verdict.")
        ],
        note: Annotated[str | None, typer.Option("--note", help="A comment.")] = None,
        data_dir: DataDir = None,
    ) -> None:
        """Record a user's thumbs-up or thumbs-down on one audited retrieval."""
        from rag.audit import Feedback

        try:
            sink = build_audit_sink(settings_for(data_dir))
            if sink is None:
                raise ConfigurationError("feedback needs the audit trail (RAG_AUDIT__ENABLED)")
            sink.write_feedback(
                Feedback(audit_id=audit_id, at=datetime.now(UTC), helpful=helpful, note=note)
            )
        except RagError as exc:
            print_error(err, exc)
            raise typer.Exit(1) from exc
        console.print(json.dumps({"audit_id": audit_id, "helpful": helpful}))
