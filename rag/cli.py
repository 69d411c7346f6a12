"""The ``rag`` command line: ingest, query, the demo, and the commands of the ``cli_*`` modules.

Exit codes (every command): 0 done; 1 an error (one line on stderr says why); 2 a usage error;
``rag ingest`` also 3: the run completed with problems (see :func:`ingest_problems`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from connectors.registry import connector_for_target
from rag import telemetry
from rag.cli_common import (
    EXIT_ERROR,
    EXIT_PROBLEMS,
    EXIT_USAGE,
    Boundary,
    DataDir,
    print_error,
    quiet_connection_logs,
)
from rag.cli_common import settings_for as _settings
from rag.config import Settings
from rag.identity import UserContext
from rag.pipeline import IngestSummary, ingest
from rag.progress import ProgressReporter
from rag.retrieval import Retriever
from rag.retrieval.core import Options

app = typer.Typer(
    help="Permission-aware RAG ingestion and retrieval.\n\n"
    "Exit codes: 0 done; 1 error (one line on stderr says why); 2 usage error; "
    "3 (rag ingest) completed with problems.",
    no_args_is_help=True,
    cls=Boundary,
    rich_markup_mode=None,
)
console = Console()
err = Console(stderr=True)


@app.callback()
def _main(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Log each step at INFO, and the HTTP clients' retries and connection errors.",
        ),
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("rag.progress").setLevel(logging.INFO)
    quiet_connection_logs(verbose)
    telemetry.configure_from_env()  # OTEL_TRACES_EXPORTER etc.; spans are no-ops otherwise


def _ingest(
    target: str, settings: Settings, name: str | None, full_resync: bool = False
) -> IngestSummary:
    connector = connector_for_target(target, name)
    with ProgressReporter(f"ingest {connector.name}", console=err) as progress:
        return ingest(connector, settings, progress=progress, full_resync=full_resync)


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
        line = f"{record.uri}: {record.reason} ({record.message})"
        console.print(f"  [yellow]quarantined[/] {_esc(line)}", highlight=False, soft_wrap=True)
    for line in summary.listing_errors:
        console.print(f"  [red]not listed[/] {_esc(line)}", soft_wrap=True)
    for problem in summary.policy_errors:
        console.print(
            f"  [red]policy error (what it governs is hidden)[/] {_esc(problem)}", soft_wrap=True
        )
    if summary.deletion_blocked:
        console.print(f"  [red]deletion held back:[/] {_esc(summary.deletion_blocked)}")


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def ingest_problems(summary: IngestSummary, still_quarantined: int = 0) -> list[str]:
    """Why a completed run did not do all that was asked (empty: it did): the reasons for exit
    code 3. ``still_quarantined`` counts files quarantined by earlier runs that this run left
    as they were (same content and ACL)."""
    problems: list[str] = []
    if not summary.listing_complete or summary.listing_errors:
        problems.append(
            f"the listing was incomplete ({len(summary.listing_errors)} errors): nothing was "
            "deleted, and documents not listed were not checked"
        )
    if summary.deletion_blocked:
        hint = (
            ""
            if "ALLOW_MASS_DELETE" in summary.deletion_blocked
            else (" (RAG_SYNC__ALLOW_MASS_DELETE=true overrides the mass-delete guard)")
        )
        problems.append(f"deletions held back: {summary.deletion_blocked}{hint}")
    if summary.policy_errors:
        problems.append(
            f"{len(summary.policy_errors)} policy problems: what a broken policy governs is hidden"
        )
    quarantined = len(summary.quarantined) + still_quarantined
    if quarantined:
        earlier = f", {still_quarantined} of them from earlier runs" if still_quarantined else ""
        problems.append(f"{quarantined} files quarantined{earlier} (rag quarantine list says why)")
    return problems


_INGEST_HELP = """Sync a source into the index: a folder (ACLs from its .rag-acl.toml policy
files), an S3 prefix (ACLs from .metadata.json sidecars and .rag-acl.toml), or a push manifest.

\b
Exit codes:
  0  the run completed and did all that was asked
  1  error: the run failed or could not start (one line on stderr says why)
  2  usage error: a bad option or argument
  3  the run completed with problems: an incomplete listing (nothing was deleted),
     deletions held back by the mass-delete guard (RAG_SYNC__ALLOW_MASS_DELETE=true
     overrides it), files quarantined now or by earlier runs (rag quarantine list),
     or broken policy files (what they govern is hidden)
A dry run exits 0 or 1."""


@app.command("ingest", help=_INGEST_HELP)
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
        typer.Option("--name", help="Source name (default: the folder, bucket or manifest name)."),
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
    settings = _settings(data_dir)
    if dry_run:
        _dry_run(target, settings, name, full_resync, as_json)
        return
    summary = _ingest(target, settings, name, full_resync)
    from rag.cli_quarantine import current_quarantine

    now = {r.document_id for r in summary.quarantined}
    earlier = [r for r in current_quarantine(settings, summary.source) if r.document_id not in now]
    if as_json:
        typer.echo(json.dumps(summary.to_json(), indent=2))
    else:
        _print_summary(summary)
    problems = ingest_problems(summary, len(earlier))
    for problem in problems:
        err.print(f"[yellow]problem:[/] {_esc(problem)}", soft_wrap=True, highlight=False)
    if problems:
        err.print(f"completed with problems (exit {EXIT_PROBLEMS})", highlight=False)
        raise typer.Exit(EXIT_PROBLEMS)


def _dry_run(
    target: str, settings: Settings, name: str | None, full_resync: bool, as_json: bool
) -> None:
    from rag.estimate import estimate

    connector = connector_for_target(target, name)
    with ProgressReporter(f"dry run {connector.name}", console=err) as progress:
        result = estimate(connector, settings, full_resync=full_resync, progress=progress)
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
        console.print(f"  [yellow]would be quarantined[/] {_esc(line)}", soft_wrap=True)


@app.command("query")
def query_command(
    text: Annotated[str, typer.Argument(help="The question.")],
    user: Annotated[
        str | None,
        typer.Option("--user", "-u", metavar="USER", help="The user id asking (trusted)."),
    ] = None,
    group: Annotated[
        list[str] | None,
        typer.Option(
            "--group", "-g", metavar="GROUP", help="A group of the user (trusted; repeat for more)."
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token", metavar="JWT", help="A bearer token proving who asks (RAG_AUTH__*)."
        ),
    ] = None,
    k: Annotated[
        int | None,
        typer.Option(
            "--k",
            "-k",
            min=1,
            max=1000,
            metavar="N",
            help="Hits to return, 1 to 1000 (default: RAG_RETRIEVAL__TOP_K).",
        ),
    ] = None,
    mode: Annotated[
        Literal["dense", "bm25", "hybrid"] | None,
        typer.Option(
            "--mode",
            help="dense (vectors), bm25 (keywords) or hybrid (both, fused by reciprocal rank) "
            "(default: RAG_RETRIEVAL__MODE).",
        ),
    ] = None,
    min_score: Annotated[
        float | None,
        typer.Option(
            "--min-score", help="Drop hits scored below this (default: RAG_RETRIEVAL__MIN_SCORE)."
        ),
    ] = None,
    filter_text: Annotated[
        str | None,
        typer.Option(
            "--filter",
            metavar="EXPR",
            help="Only documents matching this metadata filter, e.g. "
            '\'source = "handbook" and modified >= "2026-01-01"\' (narrows, never widens).',
        ),
    ] = None,
    where_pairs: Annotated[
        list[str] | None,
        typer.Option(
            "--where",
            metavar="KEY=VALUE",
            help="Only documents whose metadata KEY equals VALUE (repeat: all must hold).",
        ),
    ] = None,
    rerank: Annotated[
        bool | None,
        typer.Option(
            "--rerank/--no-rerank",
            help="Rerank the first-stage candidates (default: on when a reranker is set).",
        ),
    ] = None,
    expand: Annotated[
        Literal["neighbors", "section"] | None,
        typer.Option(
            "--expand",
            help="Add each hit's neighbouring chunks or the rest of its section (same ACL).",
        ),
    ] = None,
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print hits as one JSON object.")] = False,
) -> None:
    """Search the index as one user; only chunks that user may read come back.

    Read-only: a data dir or alias with nothing ingested is an error, and nothing is created."""
    from rag.filters import all_of, parse_filter, where
    from rag.retrieval.citations import cite

    settings = _settings(data_dir)
    if (user is None) == (token is None):
        err.print("[red]error:[/] give either --user (with --group) or --token")
        raise typer.Exit(EXIT_USAGE)
    options: Options = {}  # each option left out takes the settings' default
    if mode is not None:
        options["mode"] = mode
    if min_score is not None:
        options["min_score"] = min_score
    if rerank is not None:
        options["rerank"] = rerank
    if expand is not None:
        options["expand"] = expand
    options["filter"] = all_of(
        parse_filter(filter_text) if filter_text is not None else None,
        where(where_pairs or []),
    )
    try:
        if token is not None:
            from rag.resolve import IdentityResolver

            context = IdentityResolver(settings).from_token(token)
        else:
            context = UserContext.of(user or "", group or [])
        result = Retriever.from_settings(settings).search(text, context, k, **options)
    except ValueError as exc:  # our InvalidRequestError, or a model refusing a value
        print_error(err, exc)
        raise typer.Exit(EXIT_ERROR) from None
    hits = result.hits
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "query": text,
                    "user": context.user_id,
                    "groups": sorted(context.groups),
                    "audit_id": result.audit_id,
                    "hits": [{**h.to_json(), "reference": cite(h.chunk).to_json()} for h in hits],
                },
                indent=2,
            )
        )
        return
    if not hits:
        console.print("No results this user may see.")
    for rank, hit in enumerate(hits, start=1):
        console.print(
            f"[bold]{rank}.[/] {_esc(hit.chunk.citation.uri)} "
            f"[dim](score {hit.score:.3f}, chunk {hit.chunk.id[:12]})[/]"
        )
        console.print(f"   {_esc(_snippet(hit.chunk.text))}")


def _snippet(text: str, width: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


@app.command("demo")
def demo_command(data_dir: DataDir = None) -> None:
    """Ingest the bundled demo company (source "kestrel") into the data dir and show how
    answers differ by user; rag query then searches it too."""
    from rag.demo import CORPUS_NAME, DEMO_MIN_SCORE, QUESTIONS, USERS, corpus_path

    settings = _settings(data_dir)
    console.rule("[bold]Ingesting the Kestrel Dynamics demo corpus")
    summary = _ingest(str(corpus_path()), settings, CORPUS_NAME)
    _print_summary(summary)
    retriever = Retriever.from_settings(settings)
    for question in QUESTIONS:
        console.print(f"\n[bold]Q: {question}[/]")
        for user in USERS:
            # The answer comes from the default mode (hybrid: the best measured); whether
            # anything relevant exists is judged on the dense scale, the one with a fixed meaning.
            relevant = retriever.retrieve(
                question, user, k=1, mode="dense", min_score=DEMO_MIN_SCORE
            )
            hits = retriever.retrieve(question, user, k=1) if relevant else []
            who = f"{user.user_id} ({', '.join(sorted(user.groups)) or 'no groups'})"
            if hits:
                hit = hits[0]
                console.print(
                    f"  {who:<28} [cyan]{_esc(hit.chunk.citation.uri)}[/]  "
                    f"{_esc(_snippet(hit.chunk.text, 60))}"
                )
            else:
                console.print(f"  {who:<28} [dim]nothing relevant this user may read[/]")
    where = settings.data_dir if settings.store.backend == "lancedb" else "OpenSearch"
    console.print(
        f"\nIngested into {where} as source {CORPUS_NAME!r}: try "
        f'rag query "How many vacation days?" --user alice --group hr',
        highlight=False,
    )


@app.command("serve-embeddings")
def serve_embeddings_command(
    host: Annotated[str, typer.Option("--host", help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port.")] = 8080,
    max_batch: Annotated[
        int, typer.Option("--max-batch", min=1, help="Most texts per model call.")
    ] = 64,
    max_wait_ms: Annotated[
        float, typer.Option("--max-wait-ms", min=0, help="How long a batch waits to fill (ms).")
    ] = 5.0,
    device: Annotated[
        Literal["cpu", "cuda", "auto"],
        typer.Option("--device", help="Where the model runs: cpu, cuda, or auto (CUDA if any)."),
    ] = "auto",
    model_dir: Annotated[
        Path | None,
        typer.Option(
            "--model-dir",
            exists=True,
            file_okay=False,
            dir_okay=True,
            help="Serve this sentence-transformers model directory with PyTorch (on CUDA when "
            "present; needs sentence-transformers and torch) instead of the bundled ONNX "
            "all-MiniLM-L6-v2.",
        ),
    ] = None,
    reranker: Annotated[
        Path | None,
        typer.Option(
            "--reranker",
            exists=True,
            file_okay=False,
            dir_okay=True,
            help="An ONNX cross-encoder folder (model.onnx, tokenizer.json): also serve "
            "POST /rerank.",
        ),
    ] = None,
) -> None:
    """Serve an embedding model over the text-embeddings-inference HTTP API (POST /embed,
    POST /rerank with --reranker), the OpenAI-compatible POST /v1/embeddings, and Prometheus
    GET /metrics; logs the address it listens on."""
    from rag.embeddings.base import Embedder
    from rag.rerank.local import OnnxCrossEncoder
    from rag.serve import create_app, serve

    settings = _settings(None)
    embedder: Embedder
    if model_dir is not None:
        from rag.embeddings.sentence_transformers import SentenceTransformerEmbedder

        embedder = SentenceTransformerEmbedder(model_dir, device, batch_size=max_batch)
    else:
        from rag.embeddings.minilm import MiniLMEmbedder

        embedder = MiniLMEmbedder(
            settings.embedding.max_sequence_tokens, settings.embedding.threads, device
        )
    scorer = None  # project errors (a bad folder, a port in use) print one line: see cli_common
    if reranker is not None:
        local = settings.rerank.local
        scorer = OnnxCrossEncoder(
            reranker,
            max_sequence_tokens=local.max_sequence_tokens,
            batch_size=local.batch_size,
            threads=local.threads or settings.embedding.threads,
            device=device,
            model_sha256=local.model_sha256,
        )
        scorer.rerank("warm-up", ["warm-up"])  # fail fast on a bad folder
    serve(create_app(embedder, max_batch, max_wait_ms, reranker=scorer), host, port)


@app.command("eval")
def eval_command(
    suite: Annotated[str, typer.Option("--suite", help="A shipped suite name or a .toml path.")],
    out: Annotated[Path, typer.Option("--out", help="Where reports and history go.")] = Path(
        "reports"
    ),
    data_dir: DataDir = None,
) -> None:
    """Run an evaluation suite and write its HTML, JSON and markdown report; exit 1 on a leak,
    a threshold miss or a regression."""
    from evaluation.report import write_report
    from evaluation.runner import run_suite
    from evaluation.suite import load_suite

    settings = _settings(data_dir)
    loaded = load_suite(suite)
    with ProgressReporter(f"eval {loaded.name}", console=err, unit="steps") as progress:
        result = run_suite(loaded, out, settings.data_dir / "eval", progress=progress)
    result.feedback = _feedback(settings)
    path = write_report(result, out)
    for key, value in sorted(result.headline().items()):
        console.print(f"  {key:<40} {value:.4f}")
    console.print(f"report: {path}")
    if result.passed:
        console.print(f"[green]PASS[/] {result.suite}: {result.leaks} leaks")
        return
    for failure in result.failures:
        console.print(f"  [red]{_esc(failure)}[/]")
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
    from rag import cli_audit, cli_directory, cli_quarantine, cli_runs, cli_sources

    cli_audit.register(app, console, err)
    cli_directory.register(app, console, err)
    cli_runs.register(app, console, err)
    cli_sources.register(app, console, err)
    cli_quarantine.register(app, console, err)


_register_more()
