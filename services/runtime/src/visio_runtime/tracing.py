"""OpenTelemetry tracing, off by default. On, one appointment's story is one trace across the
four services: booking's HTTP request, its database statements, the outbox row (which keeps the
request's `traceparent` and publishes under it), each consumer's handling of the event, the
Graph calls (httpx), the SMTP send, and the events each handler publishes (FastStream's
telemetry middleware carries the W3C trace context in Kafka headers).

- FastAPI (the public app), httpx and asyncpg are traced by the OpenTelemetry instrumentation
  packages. httpx and asyncpg are instrumented for the whole process — one process is one
  service — the first time a runtime with tracing on is built.
- Each record handled gets a span that continues the trace of its `traceparent` header
  (`handling`), whatever lane or task runs it: the lanes may run a record in a task started
  for an earlier one, whose context is not this record's.
- A batch (visio_runtime.batches) is one span *linked* to every record's span — one unit of
  work serves many traces; within it, `within(event)` goes back to one event's trace for the
  work done for that event alone (notifications' email), so it lands in that person's trace.
- Exporters: `console`, or `otlp` (OTLP over HTTP/protobuf, to `tracing_otlp_endpoint`, or
  the `OTEL_EXPORTER_OTLP_*` variables when unset).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextvars import ContextVar
from typing import Any

from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

__all__ = ["SpanExporter"]
from opentelemetry.trace import Link, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from visio_runtime.settings import ServiceSettings

NO_TRACER: Tracer = trace.NoOpTracer()
_PROPAGATOR = TraceContextTextMapPropagator()
# Within a batch handler: each event (by identity) → the context of its record's span.
_BATCH: ContextVar[Mapping[int, Context] | None] = ContextVar("visio_batch", default=None)
_instrumented = False


def tracer_provider(
    settings: ServiceSettings, service: str, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """The service's provider, or None with tracing off. `exporter` replaces the one the
    settings name (tests pass an in-memory one)."""
    if not settings.tracing_enabled:
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": f"visio-rdv-{service}"}))
    exporter = exporter or _exporter(settings)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    instrument_libraries(provider)
    return provider


def instrument_libraries(provider: TracerProvider) -> None:
    """httpx (Graph) and asyncpg spans, for the whole process, once. Statements are recorded
    without their parameters: those are people's names and addresses."""
    global _instrumented
    if _instrumented:
        return
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    asyncpg = AsyncPGInstrumentor(capture_parameters=False)  # type: ignore[no-untyped-call]
    asyncpg.instrument(tracer_provider=provider)
    _instrumented = True


def instrument_app(app: Any, provider: TracerProvider) -> None:
    """A server span per HTTP request, but none for probes and scrapes (noise, every second)."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=provider, excluded_urls="/health/.*,/metrics"
    )


def telemetry_middleware(provider: TracerProvider) -> KafkaTelemetryMiddleware:
    # Its message counters would duplicate our Prometheus ones: traces only.
    return KafkaTelemetryMiddleware(tracer_provider=provider, include_messages_counters=False)


def stamp(headers: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Write the current trace context into `headers` (for a record published later: the
    outbox keeps it with the row)."""
    _PROPAGATOR.inject(headers)
    return headers


@contextlib.contextmanager
def carried(headers: Mapping[str, str]) -> Iterator[None]:
    """Make the trace context written in `headers` the current one (the outbox relay, publishing
    a row under the trace of the request that wrote it)."""
    token = otel_context.attach(_PROPAGATOR.extract(headers))
    try:
        yield
    finally:
        otel_context.detach(token)


@contextlib.contextmanager
def handling(tracer: Tracer, name: str, headers: Mapping[str, str]) -> Iterator[None]:
    """The span of one record's handling, in the trace its `traceparent` names (a new one
    without), current for everything the handler does."""
    if tracer is NO_TRACER:
        # Tracing off: the record's span context is made current all the same, as the no-op
        # tracer's span would make it (logs say its trace id; what the handling writes carries
        # its traceparent on), without the span machinery: a tenth of a light consumer's CPU.
        span = trace.get_current_span(_PROPAGATOR.extract(headers))
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            yield
        finally:
            otel_context.detach(token)
        return
    with tracer.start_as_current_span(
        name, context=_PROPAGATOR.extract(headers), kind=SpanKind.CONSUMER
    ):
        yield


@contextlib.contextmanager
def batch_span(
    tracer: Tracer, name: str, events: Sequence[Any], contexts: Sequence[Context]
) -> Iterator[None]:
    """The span of one batch, linked to the span of each record it holds. One record: its
    span is the parent too (the batch *is* that record's handling). Many: a trace of its own
    — a span has one parent, and no one record's trace owns the work of all."""
    links = [Link(span) for ctx in contexts if (span := _span_context(ctx)) is not None]
    parent = contexts[0] if len(contexts) == 1 else Context()
    token = _BATCH.set({id(event): ctx for event, ctx in zip(events, contexts, strict=True)})
    try:
        with tracer.start_as_current_span(
            name,
            context=parent,
            links=links,
            attributes={"messaging.batch.message_count": len(events)},
        ):
            yield
    finally:
        _BATCH.reset(token)


@contextlib.contextmanager
def within(event: Any) -> Iterator[None]:
    """In a batch handler: do what follows in `event`'s own trace (its record's span is the
    parent). Outside a batch, or tracing off, nothing changes."""
    ctx = (_BATCH.get() or {}).get(id(event))
    if ctx is None:
        yield
        return
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


def current() -> Context:
    """The current context, to hand to work that will run later (a batch's item)."""
    return otel_context.get_current()


def _span_context(ctx: Context) -> trace.SpanContext | None:
    span = trace.get_current_span(ctx).get_span_context()
    return span if span.is_valid else None


def _exporter(settings: ServiceSettings) -> SpanExporter | None:
    if settings.tracing_exporter == "console":
        return ConsoleSpanExporter()
    if settings.tracing_exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter: SpanExporter = OTLPSpanExporter(endpoint=settings.tracing_otlp_endpoint)
        return exporter
    return None
