"""OpenTelemetry spans for the stages of ingestion and retrieval.

A thin layer over ``opentelemetry.trace`` (the API, a core dependency)::

    with telemetry.span("embed", source=name, tenant=tenant, texts=len(texts)) as span:
        vectors = ...
        span.set(calls=calls, tokens=tokens)

opens a span named ``rag.embed`` whose attributes are ``rag.source``, ``rag.tenant``,
``rag.texts``, ``rag.calls`` and ``rag.tokens`` (``None`` values are left out); its duration is
the stage's latency. Without an SDK (the ``telemetry`` extra) or with no tracer provider
installed, the API's tracer is a no-op and a span costs a few microseconds.

Spans carry counts, ids (document ids are hashes), source, tenant, mode and k, and never text,
queries, file names or principals: traces leave the permission boundary. For the same reason an
exception marks its span failed with the exception's type only, not its message.

An application installs a tracer provider itself, or calls :func:`configure_from_env`, which
follows the standard ``OTEL_*`` variables (every orchestration step does).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib.metadata import EntryPoint, entry_points
from typing import Final

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

log = logging.getLogger(__name__)

AttributeValue = str | bool | int | float | Sequence[str] | Sequence[int] | Sequence[float] | None

PREFIX: Final = "rag."
NAME: Final = "rag-acl"
"""The service name of the spans when ``OTEL_SERVICE_NAME`` does not give one."""
_TRACER = trace.get_tracer("rag")  # a proxy: follows the provider installed later, if any
_OTLP_BY_PROTOCOL: Final = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}


class StageSpan:
    """The span of one stage: ``set`` adds attributes as the work reveals them."""

    __slots__ = ("_span",)

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    @property
    def recording(self) -> bool:
        """Whether anything records this span (False without an SDK provider)."""
        return self._span.is_recording()

    def set(self, **attributes: AttributeValue) -> None:
        if self._span.is_recording():
            self._span.set_attributes(_attributes(attributes))


@contextmanager
def span(stage: str, **attributes: AttributeValue) -> Iterator[StageSpan]:
    """A span named ``rag.<stage>``, current for the block (stages inside it are its children),
    with ``attributes`` as ``rag.<name>``."""
    with _TRACER.start_as_current_span(
        PREFIX + stage,
        attributes=_attributes(attributes),
        record_exception=False,  # an exception's message may name a document
        set_status_on_exception=False,
    ) as current:
        try:
            yield StageSpan(current)
        except Exception as exc:
            current.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            current.set_attribute("error.type", f"{type(exc).__module__}.{type(exc).__qualname__}")
            raise


def _attributes(values: Mapping[str, AttributeValue]) -> dict[str, AttributeValue]:
    return {PREFIX + name: value for name, value in values.items() if value is not None}


def configure_from_env() -> bool:
    """Install an SDK tracer provider that exports where the standard variables say, once per
    process: ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``, any installed exporter's name,
    comma-separated), ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL``/``ENDPOINT``/``HEADERS``,
    ``OTEL_SERVICE_NAME`` (default :data:`NAME`), ``OTEL_RESOURCE_ATTRIBUTES``,
    ``OTEL_TRACES_SAMPLER``. Unset (or ``none``), or ``OTEL_SDK_DISABLED=true``: nothing is
    installed. A provider already installed (by the application) is left as it is.

    Returns whether spans are recorded by a provider now. Telemetry never stops the work: a
    missing SDK or exporter is logged and spans stay no-ops."""
    names = [n.strip() for n in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    names = [n for n in names if n and n != "none"]
    if not names or os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return True
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "OTEL_TRACES_EXPORTER is set but opentelemetry-sdk is not installed "
            "(the telemetry extra): no spans are exported"
        )
        return False
    exporters = [e for e in map(_exporter, names) if e is not None]
    if not exporters:
        return False
    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    provider = TracerProvider(resource=Resource.create({} if named else {"service.name": NAME}))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter()))
    trace.set_tracer_provider(provider)
    return True


def _exporter(name: str) -> type | None:
    """The span exporter class an installed package registers under ``name``."""
    entry = exporter_entry(name)
    if entry is None:
        log.warning("no span exporter %r is installed: its spans are not exported", name)
        return None
    exporter: type = entry.load()
    return exporter


def exporter_entry(name: str) -> EntryPoint | None:
    """The entry point of the span exporter ``name`` (``otlp`` follows the OTLP protocol
    variables, as the SDK's own configuration does), or None when none is installed."""
    if name == "otlp":
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", ""
        )
        name = _OTLP_BY_PROTOCOL.get(protocol.strip(), name)
    found = entry_points(group="opentelemetry_traces_exporter", name=name)
    return next(iter(found), None)


def flush(timeout_millis: int = 5_000) -> None:
    """Export the spans still buffered (before a task's process ends); a no-op without an SDK
    provider."""
    force_flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    if force_flush is not None:
        force_flush(timeout_millis)
