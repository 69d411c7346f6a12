"""``rag directory sync`` and ``rag directory show``: the group directory beside the index."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from rag.cli_common import DataDir, print_error, settings_for
from rag.errors import RagError
from rag.progress import ProgressReporter

directory_app = typer.Typer(
    help="The synced group directory (LDAP / SCIM).", no_args_is_help=True, rich_markup_mode=None
)


def register(app: typer.Typer, console: Console, err: Console) -> None:
    """Add ``rag directory ...`` to ``app``."""

    @directory_app.command("sync")
    def sync_command(
        data_dir: DataDir = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    ) -> None:
        """Sync users, groups and memberships from the directory (RAG_DIRECTORY__*)."""
        from rag.directory import sync_directory

        settings = settings_for(data_dir)
        try:
            label = f"directory sync {settings.directory.backend}"
            with ProgressReporter(label, console=err, unit="entries") as progress:
                summary = sync_directory(settings, progress=progress)
        except RagError as exc:
            print_error(err, exc)
            raise typer.Exit(1) from exc
        if as_json:
            typer.echo(summary.model_dump_json(indent=2))
        else:
            console.print(
                f"directory {summary.source}: {summary.users} users, {summary.groups} groups, "
                f"{summary.memberships} memberships (+{summary.added} / -{summary.removed})"
            )
            for error in summary.errors:
                console.print(f"  [red]{error}[/]")
        if not summary.applied:
            raise typer.Exit(1)

    @directory_app.command("show")
    def show_command(
        user: Annotated[str, typer.Argument(help="Any id of the user (e-mail, UPN, DN, ...).")],
        data_dir: DataDir = None,
    ) -> None:
        """The aliases and transitive groups the directory gives one user."""
        from rag.directory import open_directory

        try:
            resolved = open_directory(settings_for(data_dir)).resolve(user)
        except RagError as exc:
            print_error(err, exc)
            raise typer.Exit(1) from exc
        typer.echo(
            json.dumps(
                {
                    "found": resolved.found,
                    "user_id": resolved.user_id,
                    "aliases": sorted(resolved.aliases),
                    "groups": sorted(resolved.groups),
                },
                indent=2,
                ensure_ascii=False,
            )
        )

    app.add_typer(directory_app, name="directory")
