"""OpenTelemetry tracing, off by default. On, FastStream's telemetry middleware opens a span per
message consumed and published and carries the W3C trace context in Kafka headers
(`traceparent`), so one appointment's story is one trace across the four services."""

from __future__ import annotations

from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from visio_runtime.settings import ServiceSettings


def tracer_provider(settings: ServiceSettings, service: str) -> TracerProvider | None:
    if not settings.tracing_enabled:
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": f"visio-rdv-{service}"}))
    exporter = _exporter(settings)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def telemetry_middleware(provider: TracerProvider) -> KafkaTelemetryMiddleware:
    # Its message counters would duplicate our Prometheus ones: traces only.
    return KafkaTelemetryMiddleware(tracer_provider=provider, include_messages_counters=False)


def _exporter(settings: ServiceSettings) -> SpanExporter | None:
    if settings.tracing_exporter == "console":
        return ConsoleSpanExporter()
    if settings.tracing_exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:  # an optional extra, not a dependency of every service
            raise RuntimeError(
                "tracing_exporter=otlp needs the opentelemetry-exporter-otlp package"
            ) from exc
        exporter: SpanExporter = OTLPSpanExporter(endpoint=settings.tracing_otlp_endpoint)
        return exporter
    return None
