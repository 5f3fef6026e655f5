"""One trace from booking's HTTP request to the email sent, on the real stack.

The services run as `visio-rdv up` runs them, each in its own process (real tansu, PostgreSQL,
Graph emulator, SMTP sink), exporting with the OTLP exporter an operator would switch on, to a
small OTLP/HTTP receiver this test runs. Running the apps in one process with an in-memory
exporter instead would test less: the httpx and asyncpg instrumentations are process-wide, so
three services in one process would share them (every span credited to the first service),
and the OTLP exporter — the part that used to raise at start — would not be exercised at all.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from visio_deploy.proof.stack import ProofStack, proof_stack

from .self_service_support import wait_for
from .test_end_to_end import booking_body

pytestmark = pytest.mark.long  # whole stacks: handed out first (conftest.py)

SERVICES = ("booking", "meetings", "notifications", "consent")


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    links: tuple[tuple[str, str], ...]  # (trace id, span id)


class OtlpReceiver:
    """Takes OTLP/HTTP protobuf exports on /v1/traces, as a collector would, and keeps them."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.take(request)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def take(self, request: ExportTraceServiceRequest) -> None:
        spans = []
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(
                        Span(
                            service=resource["service.name"].removeprefix("visio-rdv-"),
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            links=tuple(
                                (link.trace_id.hex(), link.span_id.hex()) for link in span.links
                            ),
                        )
                    )
        with self.lock:
            self.spans.extend(spans)

    def trace(self, trace_id: str) -> list[Span]:
        with self.lock:
            return [span for span in self.spans if span.trace_id == trace_id]

    def all(self) -> list[Span]:
        with self.lock:
            return list(self.spans)


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()


@pytest.fixture(scope="module")
def stack(postgres_url: str, receiver: OtlpReceiver) -> Iterator[ProofStack]:
    env = {
        name: {
            f"{name.upper()}_TRACING_ENABLED": "true",
            f"{name.upper()}_TRACING_EXPORTER": "otlp",
            f"{name.upper()}_TRACING_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200",  # spans out within a fraction of a second
        }
        for name in SERVICES
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATABASE_URL", postgres_url)
        with proof_stack(seed=7, quiet=True, faults=False, name="traces", env=env) as running:
            yield running


def book(stack: ProofStack, traceparent: str) -> str:
    headers = {"Authorization": f"Bearer {stack.api_key}", "traceparent": traceparent}
    with httpx.Client(base_url=stack.url("booking"), headers=headers, trust_env=False) as api:
        consent = {
            "cgu_version": api.get("/v1/cgu/current").json()["version"],
            "accepted_at": datetime.now(UTC).isoformat(),
            "recording_authorised": True,
        }
        answer = api.post("/v1/appointments", json=booking_body(consent=consent))
        assert answer.status_code == 202, answer.text
        path = f"/v1/appointments/{answer.json()['appointment_id']}"
        wait_for(lambda: api.get(path).json()["status"] == "confirmed", 60, "a confirmation")
        return str(answer.json()["appointment_id"])


def test_one_trace_runs_from_the_http_request_to_the_email_sent(
    stack: ProofStack, receiver: OtlpReceiver
) -> None:
    # The caller (a partner's system, say) starts the trace; booking continues it.
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    book(stack, f"00-{trace_id}-{caller_span}-01")

    def email_span() -> Span | None:
        sent = [s for s in receiver.trace(trace_id) if s.name == "smtp send"]
        return sent[0] if sent else None

    smtp = wait_for(email_span, 30, "the SMTP send's span in the booking's trace")
    assert smtp.service == "notifications"
    assert smtp.attributes["smtp.outcome"] == "sent"

    # Everything the appointment went through, each span with its parent in the same trace.
    # A span is exported when it ends, its children before it, and in batches: a consumer's
    # span still open (or in the next export) has children here already. So the trace is
    # awaited until every span has its parent; one that never gets it fails with its name.
    def orphans() -> list[str]:
        spans = receiver.trace(trace_id)
        ids = {span.span_id for span in spans}
        return [s.name for s in spans if s.parent_id not in ids and s.parent_id != caller_span]

    try:
        wait_for(lambda: not orphans(), 30, "every span's parent in the trace")
    except AssertionError:
        assert not orphans(), f"spans whose parent never came: {orphans()}"
    spans = receiver.trace(trace_id)
    by_id = {span.span_id: span for span in spans}

    def names(service: str) -> set[str]:
        return {span.name for span in spans if span.service == service}

    assert {"booking", "meetings", "notifications", "consent"} <= {s.service for s in spans}
    assert "POST /v1/appointments" in names("booking")  # FastAPI
    http_request = next(s for s in spans if s.name == "POST /v1/appointments")
    assert http_request.parent_id == caller_span
    assert any(
        s.attributes.get("db.system") == "postgresql" for s in spans if s.service == "booking"
    )
    # Graph, through httpx (meetings sends its calls in JSON batches: POST /v1.0/$batch).
    graph = [s for s in spans if s.service == "meetings" and "http.url" in s.attributes]
    assert graph and all(s.attributes["http.url"].startswith(stack.graph) for s in graph)
    assert all(s.attributes["http.status_code"] == 200 for s in graph)
    # The email's span descends from the HTTP request, hop by hop through Kafka.
    chain, span = [], smtp
    while span.parent_id in by_id:
        chain.append(f"{span.service}:{span.name}")
        span = by_id[span.parent_id]
    assert span is http_request, chain
    # The email goes out in the trace of whichever of its two events reached notifications
    # last: meetings' MeetingReady (the chain runs through meetings), or the appointment itself
    # when the meeting was there first (the topics race; a fast Graph makes it common).
    settled_by = next(hop for hop in chain if hop.startswith("notifications:") and "process" in hop)
    assert settled_by.endswith((".meetings.v1", ".appointments.v1")), chain
    if settled_by.endswith(".meetings.v1"):
        assert "meetings" in {hop.split(":")[0] for hop in chain}, chain

    # A batch handler's span is linked to the span of each record it took.
    batches = [s for s in receiver.all() if s.name.startswith("batch ")]
    ours = [s for s in batches if any(link[0] == trace_id for link in s.links)]
    assert {s.service for s in ours} >= {"notifications", "consent"}, batches
    for batch in ours:
        for link_trace, link_span in batch.links:
            if link_trace == trace_id:
                assert link_span in by_id


def test_no_probe_or_scrape_makes_a_trace(stack: ProofStack, receiver: OtlpReceiver) -> None:
    with httpx.Client(trust_env=False) as client:
        for _ in range(3):
            assert client.get(f"{stack.url('booking')}/health/ready").status_code == 200
    assert not [s for s in receiver.all() if "/health" in s.name or "/metrics" in s.name]
