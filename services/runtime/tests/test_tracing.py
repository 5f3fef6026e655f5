"""A batch that serves many traces: its span is linked to each record's span (a trace of its
own, since a span has one parent), and `within(event)` puts the work done for one event back in
that event's trace; a batch of one is simply part of its record's trace. The end-to-end
picture, one trace from booking's HTTP request to the email, is tests/test_traces.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from visio_runtime import tracing
from visio_runtime.batches import Batcher, BatchRoute, Item


async def run_batch(count: int) -> tuple[InMemorySpanExporter, list[int], dict[str, int]]:
    """`count` records, each handled under a span of its own trace, submitted to one batch
    whose handler notes, per event, the trace it is in within `within`."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    seen: dict[str, int] = {}

    async def handler(events: list[str]) -> None:
        for event in events:
            with tracing.within(event), tracer.start_as_current_span(f"work for {event}"):
                seen[event] = trace.get_current_span().get_span_context().trace_id

    batcher = Batcher(
        lambda items, seconds: None, _never, window_s=0.05, max_size=count, tracer=tracer
    )
    route = BatchRoute(handler, "follow")
    record_traces: list[int] = []

    async def record(event: str) -> Any:
        with tracer.start_as_current_span(f"process {event}") as span:
            record_traces.append(span.get_span_context().trace_id)
            return await batcher.submit(route, Item(event, context=None))

    outcomes = await asyncio.gather(*(record(f"event-{n}") for n in range(count)))
    assert outcomes == ["handled"] * count
    return exporter, record_traces, seen


async def _never(item: Item, exc: Exception) -> Any:
    raise AssertionError(f"the batch failed: {exc!r}")


async def test_a_batch_of_many_is_linked_to_each_record_and_each_event_keeps_its_trace() -> None:
    exporter, record_traces, seen = await run_batch(3)
    spans = {span.name: span for span in exporter.get_finished_spans()}
    batch = spans["batch follow"]
    assert len(set(record_traces)) == 3  # three traces (three people)
    linked = {link.context.trace_id for link in batch.links}
    assert linked == set(record_traces)
    assert batch.context.trace_id not in record_traces  # its own trace
    assert batch.attributes is not None
    assert batch.attributes["messaging.batch.message_count"] == 3
    # The work for each event is in that event's trace, not the batch's.
    assert [seen[f"event-{n}"] for n in range(3)] == record_traces


async def test_a_batch_of_one_is_part_of_its_records_trace() -> None:
    exporter, record_traces, seen = await run_batch(1)
    spans = {span.name: span for span in exporter.get_finished_spans()}
    batch, record = spans["batch follow"], spans["process event-0"]
    assert batch.parent is not None and batch.parent.span_id == record.context.span_id
    assert seen["event-0"] == record_traces[0]


async def test_without_tracing_nothing_is_recorded() -> None:
    batcher = Batcher(lambda items, seconds: None, _never, window_s=0.01, max_size=2)
    ran: list[str] = []

    async def handler(events: list[str]) -> None:
        with tracing.within(events[0]):
            ran.append(events[0])
            assert not trace.get_current_span().get_span_context().is_valid

    assert await batcher.submit(BatchRoute(handler, "h"), Item("e", None)) == "handled"
    assert ran == ["e"]


@pytest.mark.parametrize(
    "headers",
    [
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"},  # unsampled
        {"traceparent": "not a traceparent"},
        {},
    ],
)
def test_without_tracing_a_record_is_handled_in_its_own_trace_context(
    headers: dict[str, str],
) -> None:
    """Tracing off, the handling's current span context is the one the no-op tracer's span
    gives — the record's own, so logs and the events it causes carry it on — both at the top
    and inside another record's handling."""

    def seen_by(handling: Any) -> tuple[Any, dict[str, str]]:
        with handling:
            carried: dict[str, str] = {}
            tracing._PROPAGATOR.inject(carried)
            return trace.get_current_span().get_span_context(), carried

    outer = {"traceparent": "00-11111111111111111111111111111111-2222222222222222-01"}
    for around in ({}, outer):
        with tracing.handling(tracing.NO_TRACER, "outer", around):
            fast = seen_by(tracing.handling(tracing.NO_TRACER, "record", headers))
            spans = seen_by(
                tracing.NO_TRACER.start_as_current_span(
                    "record", context=tracing._PROPAGATOR.extract(headers)
                )
            )
        assert fast == spans
        assert trace.get_current_span().get_span_context() == trace.INVALID_SPAN_CONTEXT
