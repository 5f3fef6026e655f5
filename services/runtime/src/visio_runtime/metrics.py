"""Prometheus metrics, one registry per runtime (so two services in one test process never share
a counter), exposed at /metrics.

Names are `visio_<name>`; which service a series comes from is the scrape target's job (and
`visio_service_info`), not a label on every series. Beside them, every registry carries the
standard `process_*` (CPU, memory, open files) and `python_*` (interpreter, garbage collector)
metrics that generic dashboards and alerts expect; `HttpMetrics` counts and times the HTTP
answers. The help texts are read by the on-call person in Prometheus and Grafana: they say what
a value means to them. Which rule and dashboard uses what: deploy/prometheus, deploy/grafana,
docs/runbook.md. Labels hold topics, event types, error
classes, statuses — never an id, an address or a name: a label value per person would both leak
personal data and explode the series count.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase
from visio_shared import EVENT_TYPES

PREFIX = "visio_"
CONTENT_TYPE = CONTENT_TYPE_LATEST

M = TypeVar("M", bound=MetricWrapperBase)

# Handler latencies: from a database write (ms) to a Graph call under throttling (tens of s).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self, service: str) -> None:
        # `*_created` series would double the page for no reader.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.service = service
        self.registry = CollectorRegistry()
        # What the default registry would have had: this one is ours, so add them by hand.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        # Beside GCCollector's counts: the objects a started service set aside (heap.settle).
        Gauge(
            f"{PREFIX}heap_frozen_objects",
            "Objects alive once the service had started, which no garbage collection walks "
            "(gc.freeze); 0 until then.",
            registry=self.registry,
        ).set_function(gc.get_freeze_count)
        self._metrics: dict[str, MetricWrapperBase] = {}
        self._labels: dict[str, tuple[str, ...]] = {}
        Info(f"{PREFIX}service", "The service behind this endpoint.", registry=self.registry).info(
            {"service": service}
        )

    # Declared metrics: what a service adds for itself (Graph calls, SMTP sends, outbox age…).

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        return self._declare(Counter, name, doc, labels)

    def outcomes(self, name: str, doc: str, outcomes: Iterable[str]) -> Counter:
        """A counter by `outcome`, each of `outcomes` at 0 from the start (for rate())."""
        counter = self.counter(name, doc, ["outcome"])
        for outcome in outcomes:
            counter.labels(outcome)
        return counter

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        return self._declare(Gauge, name, doc, labels)

    def histogram(
        self,
        name: str,
        doc: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        return self._declare(Histogram, name, doc, labels, buckets=buckets)

    # The small API every service already uses.

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        """Add to a counter, declared on first use with the labels it is first given. Never
        raises on labels: a label the counter has and the call lacks is '' (a service counting
        dead letters by class alone, say), one it does not have is dropped — counting must not
        fail a handler."""
        counter = self._metrics.get(name)
        if counter is None:
            counter = self.counter(name, name.replace("_", " "), sorted(labels))
        assert isinstance(counter, Counter), f"{name} is not a counter"
        names = self._labels[name]
        if names:
            counter = counter.labels(**{label: str(labels.get(label, "")) for label in names})
        counter.inc(amount)

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples named `visio_<name>` whose labels include `labels` (0 if none):
        `value("events_handled_total", event_type="X")` adds up every topic."""
        wanted = {f"{PREFIX}{name}", f"{PREFIX}{name}_total"}
        return sum(
            sample.value
            for family in self.registry.collect()
            for sample in family.samples
            if sample.name in wanted and labels.items() <= sample.labels.items()
        )

    def render(self) -> str:
        return generate_latest(self.registry).decode()

    def _declare(
        self,
        kind: type[M],
        name: str,
        doc: str,
        labels: Sequence[str],
        **options: Any,
    ) -> M:
        existing = self._metrics.get(name)
        if existing is not None:
            # Declaring twice (two handlers asking for the same counter) returns the same one.
            assert isinstance(existing, kind), f"{name} is already a {type(existing).__name__}"
            return existing
        metric = kind(f"{PREFIX}{name}", doc, list(labels), registry=self.registry, **options)
        self._metrics[name] = metric
        self._labels[name] = tuple(labels)
        return metric


def event_type_label(event_type: str | None, handled: Iterable[str] = ()) -> str:
    """An event type as a label value: the contract's types (and those a service handles) as
    they are, anything else as 'unknown', so a stranger's header cannot mint new series."""
    if event_type and (event_type in EVENT_TYPES or event_type in handled):
        return event_type
    return "unknown"


@dataclass(frozen=True)
class SourceMetrics:
    """The consumer's series of one topic and event type, looked up once."""

    consumed: Counter
    handled: Counter
    skipped: Counter
    latency: Histogram


class ConsumerMetrics:
    """The shared consumer's own metrics, declared once per runtime."""

    def __init__(self, metrics: Metrics) -> None:
        self._sources: dict[tuple[str, str], SourceMetrics] = {}
        labels = ["topic", "event_type"]
        self.consumed = metrics.counter(
            "messages_consumed_total",
            "Messages this service received from a topic (a redelivery is not counted twice).",
            labels,
        )
        self.handled = metrics.counter(
            "events_handled_total",
            "Events this service finished handling: the step is done for that appointment.",
            labels,
        )
        self.skipped = metrics.counter(
            "events_skipped_total",
            "Events of a type this service does not handle, passed over (normal: topics are "
            "shared).",
            labels,
        )
        self.failed = metrics.counter(
            "events_failed_total",
            "Handler attempts that failed, by error class (Transient: retried; others: "
            "dead-lettered).",
            [*labels, "error_class"],
        )
        self.retried = metrics.counter(
            "events_retried_total",
            "Failed attempts that will be tried again after a pause (a dependency is away).",
            labels,
        )
        self.dead_lettered = metrics.counter(
            "events_dead_lettered_total",
            "Messages given up on and sent to the dead-letter topic: an appointment stays "
            "stuck until an operator replays them (`visio-rdv ops dlq list`).",
            [*labels, "error_class"],
        )
        self.latency = metrics.histogram(
            "handler_duration_seconds",
            "Time one handler attempt took, from the message to its outcome.",
            labels,
        )
        self.lag = metrics.gauge(
            "consumer_lag_messages",
            "Messages behind the partition's end, as this consumer sees it; gone when the "
            "consumer is: `visio_consumer_group_lag_messages` measures it from outside.",
            ["topic", "partition"],
        )
        self.assigned = metrics.gauge(
            "consumer_assigned_partitions",
            "Partitions this process's consumers hold now (0: waiting for the group).",
        )
        self.held = metrics.gauge(
            "consumer_held_partitions",
            "Partitions paused because one of their messages waits to be retried.",
        )

    def of(self, topic: str, event_type: str) -> SourceMetrics:
        """The series a record of this topic and event type counts in. `labels()` takes a lock
        and rebuilds its key on every call (7 times `inc()`'s cost), two or three calls per
        record: the series are kept here, a few per service (its topics, times the event
        types `event_type_label` lets through)."""
        key = (topic, event_type)
        found = self._sources.get(key)
        if found is None:
            found = self._sources[key] = SourceMetrics(
                consumed=self.consumed.labels(topic, event_type),
                handled=self.handled.labels(topic, event_type),
                skipped=self.skipped.labels(topic, event_type),
                latency=self.latency.labels(topic, event_type),
            )
        return found


# HTTP answers: from a health check (ms) to a slow page under load (seconds).
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class HttpMetrics:
    """What every service's HTTP server answers: by method, route *template* (`/v1/appointments
    /{appointment_id}`, never the raw path, which holds ids) and status code."""

    def __init__(self, metrics: Metrics) -> None:
        self.requests = metrics.counter(
            "http_requests_total",
            "HTTP requests answered, by method, route template and status code (5xx: our "
            "fault; 4xx: the caller's).",
            ["method", "route", "status"],
        )
        self.duration = metrics.histogram(
            "http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by method and route template.",
            ["method", "route"],
            buckets=HTTP_BUCKETS,
        )
        self.in_progress = metrics.gauge(
            "http_requests_in_progress", "HTTP requests being answered right now."
        )
