"""Runs are observable: OpenTelemetry spans per stage agree with the run's summary, the steps an
orchestrator runs are traced on their own, and a batch logs its progress."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from rag import orchestration, telemetry
from rag.config import Settings
from rag.pipeline import IngestSummary, ingest
from rag.progress import ProgressReporter
from rag.sources import SourceSpec
from tests.sync_contract import make_corpus


@pytest.fixture(scope="module")
def provider() -> TracerProvider:
    """The process's SDK provider (one per process: OpenTelemetry sets the global only once)."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    installed = TracerProvider()
    trace.set_tracer_provider(installed)
    return installed


class _WhileOn(SimpleSpanProcessor):
    """Exports while the test runs; a provider cannot drop a processor, so it turns off."""

    on = True

    def on_end(self, span: ReadableSpan) -> None:
        if self.on:
            super().on_end(span)


@pytest.fixture
def exported(provider: TracerProvider) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    processor = _WhileOn(exporter)
    provider.add_span_processor(processor)
    yield exporter
    processor.on = False  # the spans of later tests are dropped, not kept
    exporter.clear()


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = make_corpus(tmp_path / "corpus", docs=5)
    (root / "eng" / "whiteboard.pdf").write_bytes(b"%PDF-1.4\nnot really a pdf")
    return root


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        tenant="acme",
        embedding={"provider": "hash", "batch_size": 4},
        sync={"batch_size": 2},
    )


def _named(spans: tuple[ReadableSpan, ...], stage: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == f"rag.{stage}"]


def _total(spans: list[ReadableSpan], attribute: str) -> int:
    return sum(int(s.attributes[f"rag.{attribute}"]) for s in spans if s.attributes)


def _agree(spans: tuple[ReadableSpan, ...], summary: IngestSummary) -> None:
    """The stage spans count what the run summary counts."""
    loads, embeds = _named(spans, "load"), _named(spans, "embed")
    (listing,) = _named(spans, "list")
    assert listing.attributes is not None
    assert listing.attributes["rag.documents"] == summary.documents_listed
    assert _total(loads, "documents") - _total(loads, "rejected") == summary.documents_ingested
    assert _total(loads, "chunks") == summary.chunks
    assert _total(loads, "tokens") == summary.tokens
    assert _total(embeds, "texts") == summary.chunks
    assert _total(embeds, "calls") == summary.embedding_calls
    assert _total(embeds, "provider_texts") == summary.embedded_texts
    assert _total(embeds, "provider_tokens") == summary.embedded_tokens
    assert _total(_named(spans, "chunk"), "chunks") == summary.chunks
    for span in spans:
        assert span.attributes is not None
        assert span.attributes["rag.tenant"] == "acme", span.name
        assert span.attributes["rag.source"] == "src", span.name


def test_spans_of_a_sync_agree_with_its_summary_and_name_no_document(
    exported: InMemorySpanExporter, corpus: Path, tmp_path: Path
) -> None:
    from connectors.filesystem import FilesystemConnector

    settings = _settings(tmp_path)
    summary = ingest(FilesystemConnector(corpus, "src"), settings)
    spans = exported.get_finished_spans()
    assert summary.documents_ingested == 5
    assert summary.embedding_calls > 1  # three batches: each one's calls are counted
    _agree(spans, summary)

    (root,) = _named(spans, "sync")  # one trace: every stage under the run's span
    assert root.parent is None
    assert root.attributes is not None
    assert root.attributes["rag.run_id"] == summary.run_id
    assert {s.context.trace_id for s in spans} == {root.context.trace_id}
    assert len(_named(spans, "parse")) == 6  # five notes and the broken PDF
    stages = {s.name.removeprefix("rag.") for s in spans}
    assert stages == {"sync", "list", "revoke", "read", "parse", "chunk", "embed", "load", "index"}

    # the broken PDF's parse failed: its span says so by type; no span names any document
    (failed,) = [s for s in spans if s.status.status_code is StatusCode.ERROR]
    assert failed.name == "rag.parse"
    assert failed.attributes is not None
    assert failed.attributes["error.type"] == "rag.errors.ParseError"
    assert failed.status.description == "ParseError"
    assert not failed.events  # no exception event (its message names the file)
    words = {"whiteboard", "note-00", ".md", ".pdf", "Paragraph", str(corpus)}
    for span in spans:
        shown = [str(v) for v in (span.attributes or {}).values()] + [span.status.description]
        assert not any(w in str(v) for w in words for v in shown), span.name

    # a second run embeds nothing, and its spans say so too
    exported.clear()
    again = ingest(FilesystemConnector(corpus, "src"), settings)
    assert again.embedding_calls == 0
    _agree(exported.get_finished_spans(), again)


def test_orchestration_steps_are_traced_on_their_own_and_batches_log_progress(
    exported: InMemorySpanExporter,
    corpus: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ticks = iter(range(0, 10_000, 11))  # every reading of the clock is 11 s later
    reporter = partial(ProgressReporter, clock=lambda: float(next(ticks)))
    monkeypatch.setattr(orchestration, "ProgressReporter", reporter)
    settings = _settings(tmp_path)
    spec = SourceSpec(name="src", options={"root": str(corpus)}, batch_size=4)

    with caplog.at_level(logging.INFO, logger="rag.progress"):
        listed = orchestration.list_changes(spec, settings)
        for index in range(listed["batches"]):
            orchestration.process_batch(spec, settings, listed["run_id"], index)
        final = orchestration.finalize(spec, settings, listed["run_id"])

    spans = exported.get_finished_spans()
    steps = [s for s in spans if s.parent is None]
    assert listed["batches"] == 2  # six documents to process, four a batch
    assert [s.name for s in steps] == [
        "rag.list_changes",
        "rag.process_batch",
        "rag.process_batch",
        "rag.finalize",
    ]
    for step in steps:
        assert step.attributes is not None
        assert step.attributes["rag.run_id"] == listed["run_id"]
    batches = {s.context.trace_id for s in steps if s.name == "rag.process_batch"}
    assert {s.context.trace_id for s in _named(spans, "embed")} <= batches
    summary = IngestSummary.from_json(final["summary"])
    assert summary.documents_ingested == 5
    _agree(tuple(s for s in spans if s not in steps), summary)

    lines = [r.getMessage() for r in caplog.records if r.name == "rag.progress"]
    for done in ("0: 1/4", "0: 2/4", "0: 3/4", "0: 4/4", "1: 1/2", "1: 2/2"):
        shown = [x for x in lines if x.startswith(f"src batch {done} documents")]
        assert shown, done  # (the heartbeat may log one more while a document parses)
        assert all("ETA" in x for x in shown)
    assert any(line.startswith("src batch 0: 4/4") and "/s" in line for line in lines)


def test_spans_are_no_ops_until_a_provider_records_them() -> None:
    unrecorded = telemetry.StageSpan(trace.INVALID_SPAN)
    unrecorded.set(documents=3)
    assert not unrecorded.recording


@pytest.mark.parametrize(
    "environment",
    [
        {},
        {"OTEL_TRACES_EXPORTER": "none"},
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"},
    ],
)
def test_nothing_is_configured_unless_an_exporter_is_asked_for(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    before = trace.get_tracer_provider()
    assert telemetry.configure_from_env() is False
    assert trace.get_tracer_provider() is before


def test_otlp_follows_the_protocol_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"):
        monkeypatch.delenv(name, raising=False)
    module = "opentelemetry.exporter.otlp.proto.{}.trace_exporter:OTLPSpanExporter"
    default = telemetry.exporter_entry("otlp")  # the SDK's default: gRPC
    assert default is not None
    assert default.value == module.format("grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    http = telemetry.exporter_entry("otlp")
    assert http is not None
    assert http.value == module.format("http")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")  # per signal wins
    grpc = telemetry.exporter_entry("otlp")
    assert grpc is not None
    assert grpc.value == module.format("grpc")
    console = telemetry.exporter_entry("console")
    assert console is not None
    assert console.value == "opentelemetry.sdk.trace.export:ConsoleSpanExporter"
    assert telemetry.exporter_entry("no-such-exporter") is None


@pytest.mark.slow
def test_a_process_configured_from_the_environment_exports_its_spans(tmp_path: Path) -> None:
    script = (
        "from rag import telemetry\n"
        "assert telemetry.configure_from_env()\n"
        "with telemetry.span('embed', source='src', calls=2):\n"
        "    pass\n"
        "telemetry.flush()\n"
    )
    env: dict[str, Any] = {**os.environ, "OTEL_TRACES_EXPORTER": "console"}
    env.pop("OTEL_SDK_DISABLED", None)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert '"name": "rag.embed"' in done.stdout
    assert '"rag.calls": 2' in done.stdout
    assert '"service.name": "rag-acl"' in done.stdout
