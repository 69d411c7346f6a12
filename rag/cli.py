"""The ``rag`` command line: ingest, query, and the demo."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from connectors.registry import connector_for_target
from rag.cli_common import DataDir, settings_for
from rag.config import Settings
from rag.errors import RagError
from rag.identity import UserContext
from rag.pipeline import IngestSummary, ingest
from rag.retrieval import Retriever

app = typer.Typer(help="Permission-aware RAG ingestion and retrieval.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

_settings = settings_for


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _ingest(
    target: str, settings: Settings, name: str | None, full_resync: bool = False
) -> IngestSummary:
    connector = connector_for_target(target, name)
    with Progress(
        TextColumn("[bold]ingest {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(connector.name, total=None)
        return ingest(
            connector,
            settings,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            full_resync=full_resync,
        )


def _print_summary(summary: IngestSummary) -> None:
    table = Table(title=f"Sync summary: {summary.source}", show_header=False)
    rows = [
        ("documents listed", summary.documents_listed),
        ("new / changed / unchanged", f"{summary.new} / {summary.changed} / {summary.unchanged}"),
        ("ACL-only / restored", f"{summary.acl_only} / {summary.restored}"),
        ("tombstoned / deleted", f"{summary.tombstoned} / {summary.deleted}"),
        ("documents ingested", summary.documents_ingested),
        ("chunks written", summary.chunks),
        ("embedding calls", summary.embedding_calls),
        ("embedded texts / tokens", f"{summary.embedded_texts} / {summary.embedded_tokens}"),
        ("quarantined", len(summary.quarantined)),
        ("listing complete", summary.listing_complete),
    ]
    if summary.revocation_delay_seconds is not None:
        rows.append(("revocation delay", f"{summary.revocation_delay_seconds:.2f} s"))
    for label, value in rows:
        table.add_row(label, str(value))
    for stage, seconds in summary.seconds.items():
        table.add_row(f"time: {stage}", f"{seconds:.2f} s")
    console.print(table)
    for record in summary.quarantined:
        console.print(f"  [yellow]quarantined[/] {record.uri}: {record.reason} ({record.message})")
    for error in summary.listing_errors:
        console.print(f"  [red]not listed[/] {error}")
    for problem in summary.policy_errors:
        console.print(f"  [red]policy error (what it governs is hidden)[/] {problem}")
    if summary.deletion_blocked:
        console.print(f"  [red]deletion held back:[/] {summary.deletion_blocked}")


@app.command("ingest")
def ingest_command(
    target: Annotated[
        str,
        typer.Argument(
            help="A folder, an s3://bucket/prefix URL, or a push manifest (.jsonl).",
            show_default=False,
        ),
    ],
    name: Annotated[
        str | None,
        typer.Option(help="Source name (default: the folder, bucket or manifest name)."),
    ] = None,
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    full_resync: Annotated[
        bool, typer.Option("--full-resync", help="Re-process every document, changed or not.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Estimate embedding calls, tokens and cost only.")
    ] = False,
) -> None:
    """Sync a source into the index: a folder (ACLs from its .rag-acl.toml policy files), an S3
    prefix (ACLs from .metadata.json sidecars and .rag-acl.toml), or a push manifest."""
    if dry_run:
        _dry_run(target, _settings(data_dir), name, full_resync, as_json)
        return
    try:
        summary = _ingest(target, _settings(data_dir), name, full_resync)
    except RagError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(json.dumps(summary.to_json(), indent=2))
    else:
        _print_summary(summary)


def _dry_run(
    target: str, settings: Settings, name: str | None, full_resync: bool, as_json: bool
) -> None:
    from rag.estimate import estimate

    try:
        connector = connector_for_target(target, name)
        result = estimate(connector, settings, full_resync=full_resync)
    except RagError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    table = Table(
        title=f"Dry run: {result.source} (nothing embedded or written)", show_header=False
    )
    cost = (
        "unknown (no price for this model)"
        if result.cost_usd is None
        else (f"${result.cost_usd:.6f}")
    )
    for label, value in [
        ("model", result.model_id),
        ("documents to process", result.documents_to_process),
        ("ACL-only updates", result.acl_only),
        ("documents to delete", result.to_delete),
        ("chunks", result.chunks),
        ("texts to embed (not cached)", result.texts_to_embed),
        ("tokens to embed", result.tokens_to_embed),
        ("embedding calls", result.embedding_calls),
        ("estimated cost", cost),
    ]:
        table.add_row(label, str(value))
    console.print(table)
    for label, counts in sorted(result.by_classification.items()):
        spread = ", ".join(f"{n} {where}" for where, n in sorted(counts.items()))
        console.print(f"  classification {label}: {spread}")
    for line in result.unparseable:
        console.print(f"  [yellow]would be quarantined[/] {line}")


@app.command("query")
def query_command(
    text: Annotated[str, typer.Argument(help="The question.")],
    user: Annotated[
        str | None, typer.Option("--user", "-u", help="The user id asking (trusted).")
    ] = None,
    group: Annotated[
        list[str] | None, typer.Option("--group", "-g", help="A group of the user (trusted).")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", help="A bearer token (JWT) proving who asks (RAG_AUTH__*)."),
    ] = None,
    k: Annotated[
        int | None,
        typer.Option("-k", min=1, max=1000, help="Hits to return (default: RAG_RETRIEVAL__TOP_K)."),
    ] = None,
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print hits as one JSON object.")] = False,
) -> None:
    """Search the index as one user; only chunks that user may read come back.

    Read-only: a data dir or alias with nothing ingested is an error, and nothing is created."""
    settings = _settings(data_dir)
    if (user is None) == (token is None):
        err.print("[red]error:[/] give either --user (with --group) or --token")
        raise typer.Exit(2)
    try:
        if token is not None:
            from rag.resolve import IdentityResolver

            context = IdentityResolver(settings).from_token(token)
        else:
            context = UserContext.of(user or "", group or [])
        result = Retriever.from_settings(settings).search(text, context, k)
        hits = result.hits
    except (RagError, ValueError) as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "query": text,
                    "user": context.user_id,
                    "groups": sorted(context.groups),
                    "audit_id": result.audit_id,
                    "hits": [h.to_json() for h in hits],
                },
                indent=2,
            )
        )
        return
    if not hits:
        console.print("No results this user may see.")
    for rank, hit in enumerate(hits, start=1):
        console.print(
            f"[bold]{rank}.[/] {hit.chunk.citation.uri} "
            f"[dim](score {hit.score:.3f}, chunk {hit.chunk.id[:12]})[/]"
        )
        console.print(f"   {_snippet(hit.chunk.text)}")


def _snippet(text: str, width: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


@app.command("demo")
def demo_command(data_dir: DataDir = None) -> None:
    """Ingest the bundled demo company and show how answers differ by user."""
    from rag.demo import CORPUS_NAME, DEMO_MIN_SCORE, QUESTIONS, USERS, corpus_path

    settings = _settings((data_dir or Path(".rag")) / "demo")
    console.rule("[bold]Ingesting the Kestrel Dynamics demo corpus")
    try:
        summary = _ingest(str(corpus_path()), settings, CORPUS_NAME)
        _print_summary(summary)
        retriever = Retriever.from_settings(settings)
        for question in QUESTIONS:
            console.print(f"\n[bold]Q: {question}[/]")
            for user in USERS:
                hits = [
                    h for h in retriever.retrieve(question, user, k=1) if h.score >= DEMO_MIN_SCORE
                ]
                who = f"{user.user_id} ({', '.join(sorted(user.groups)) or 'no groups'})"
                if hits:
                    hit = hits[0]
                    console.print(
                        f"  {who:<28} [cyan]{hit.chunk.citation.uri}[/] "
                        f"[dim]{hit.score:.2f}[/]  {_snippet(hit.chunk.text, 60)}"
                    )
                else:
                    console.print(f"  {who:<28} [dim]nothing relevant this user may read[/]")
    except RagError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc


@app.command("serve-embeddings")
def serve_embeddings_command(
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8080,
    max_batch: Annotated[int, typer.Option(help="Most texts per model call.")] = 64,
    max_wait_ms: Annotated[float, typer.Option(help="How long a batch waits to fill.")] = 5.0,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "auto",
) -> None:
    """Serve the local model over the text-embeddings-inference HTTP API (POST /embed)."""
    import uvicorn

    from rag.embeddings.minilm import MiniLMEmbedder
    from rag.serve import create_app

    settings = Settings()
    embedder = MiniLMEmbedder(
        settings.embedding.max_sequence_tokens, settings.embedding.threads, device
    )
    uvicorn.run(
        create_app(embedder, max_batch, max_wait_ms), host=host, port=port, log_level="warning"
    )


@app.command("eval")
def eval_command(
    suite: Annotated[str, typer.Option("--suite", help="A shipped suite name or a .toml path.")],
    out: Annotated[Path, typer.Option(help="Where reports and history go.")] = Path("reports"),
    data_dir: DataDir = None,
) -> None:
    """Run an evaluation suite and write its HTML, JSON and markdown report; exit 1 on failure."""
    from evaluation.report import write_report
    from evaluation.runner import run_suite
    from evaluation.suite import load_suite

    try:
        result = run_suite(load_suite(suite), out, (data_dir or Path(".rag")) / "eval")
        result.feedback = _feedback(_settings(data_dir))
    except RagError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    path = write_report(result, out)
    for key, value in sorted(result.headline().items()):
        console.print(f"  {key:<40} {value:.4f}")
    console.print(f"report: {path}")
    if result.passed:
        console.print(f"[green]PASS[/] {result.suite}: {result.leaks} leaks")
        return
    for failure in result.failures:
        console.print(f"  [red]{failure}[/]")
    console.print(f"[red]FAIL[/] {result.suite}")
    raise typer.Exit(1)


def _feedback(settings: Settings) -> list[dict[str, object]]:
    """The users' helpful rate per source and mode over the last week, from the audit trail."""
    from datetime import UTC, datetime, timedelta

    from evaluation.feedback import helpful_rates
    from rag.audit import build_audit_sink

    sink = build_audit_sink(settings)
    if sink is None:
        return []
    since = datetime.now(UTC) - timedelta(days=7)
    return [r.to_json() for r in helpful_rates(sink, since)]


def _register_more() -> None:
    from rag import cli_audit, cli_directory, cli_runs

    cli_audit.register(app, console, err)
    cli_directory.register(app, console, err)
    cli_runs.register(app, console, err)


_register_more()
