"""The service shell on the real broker and PostgreSQL: /health/ready says whether the consumer
is assigned or waiting, /metrics moves as messages flow, and with tracing on the trace context
travels from a consumed message to what its handler publishes."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from opentelemetry import trace
from prometheus_client.parser import text_string_to_metric_families
from visio_runtime.kafka import ensure_topics, start_broker
from visio_runtime.service import Runtime, build_runtime, create_service_app
from visio_runtime.settings import ServiceSettings
from visio_runtime.testing import collecting, running, wait_until
from visio_shared import Headers, MeetingFailed, NotificationFailed, publish_event


def meeting_failed() -> MeetingFailed:
    return MeetingFailed(
        appointment_id=uuid.uuid4(), revision=1, correlation_id=uuid.uuid4(), reason="x"
    )


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_health_and_metrics_follow_the_consumer(
    kafka_bootstrap: str, fresh_database: str
) -> None:
    settings = ServiceSettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"svc-{uuid.uuid4().hex[:8]}",
        database_url=fresh_database,
    )
    rt, handled = collecting("meetings", settings, MeetingFailed)
    peer_up = True

    async def peer() -> None:
        if not peer_up:
            raise ConnectionError("the peer is away")

    rt.ready_checks["peer"] = peer
    scraped = rt.metrics.gauge("probe_scrapes", "Times /metrics was read.")

    async def count_scrape(_: object) -> None:
        scraped.inc()

    rt.on_scrape.append(count_scrape)
    app = create_service_app(rt, title="probe")
    transport = httpx.ASGITransport(app=app)
    admin_transport = httpx.ASGITransport(app=app.state.admin)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://meetings") as client,
        httpx.AsyncClient(transport=admin_transport, base_url="http://meetings:9081") as admin,
    ):

        async def assigned() -> bool:
            response = await client.get("/health/ready")
            assert response.status_code == 200, response.text
            state = response.json()["consumer"]["state"]
            assert state in ("waiting", "assigned")
            return bool(state == "assigned")

        await wait_until(assigned, what="an assignment")
        assert (await client.get("/health/ready")).json()["checks"]["peer"] == "ok"
        peer_up = False
        unready = await client.get("/health/ready")
        assert unready.status_code == 503
        assert unready.json()["checks"]["peer"] == "error: ConnectionError"
        peer_up = True

        events = [meeting_failed(), meeting_failed()]
        for event in events:
            await publish_event(rt.broker, rt.topics.meetings, event)
        await wait_until(lambda: len(handled) == 2, what="two events handled")
        assert (await client.get("/metrics")).status_code == 404  # the admin port's only
        metrics = samples((await admin.get("/metrics")).text)

    labels = (("event_type", "MeetingFailed"), ("topic", rt.topics.meetings))
    assert metrics[("visio_events_handled_total", labels)] == 2
    assert metrics[("visio_messages_consumed_total", labels)] == 2
    assert metrics[("visio_messages_published_total", labels)] == 2
    assert metrics[("visio_handler_duration_seconds_count", labels)] == 2
    assert metrics[("visio_consumer_assigned_partitions", ())] == settings.topic_partitions
    lags = {key: value for key, value in metrics.items() if key[0] == "visio_consumer_lag_messages"}
    assert lags and set(lags.values()) == {0}
    assert metrics[("visio_service_info", (("service", "meetings"),))] == 1
    assert metrics[("visio_probe_scrapes", ())] == 1  # the hook ran before the page was made


async def test_the_trace_context_travels_through_a_handler(kafka_bootstrap: str) -> None:
    settings = ServiceSettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"trace-{uuid.uuid4().hex[:8]}",
        tracing_enabled=True,
    )
    rt = build_runtime("notifications", settings)
    seen: list[int] = []

    @rt.consumer.on(MeetingFailed)
    async def on_failed(event: MeetingFailed) -> None:
        seen.append(trace.get_current_span().get_span_context().trace_id)
        answer = NotificationFailed(
            **event.caused(appointment_id=event.appointment_id, revision=1),
            kind="meeting_unavailable",
            reason="no meeting",
        )
        await publish_event(rt.broker, rt.topics.notifications, answer)

    rt.consumer.subscribe(rt.topics.meetings)
    trace_id = uuid.uuid4().hex
    async with running(rt):
        # From a producer outside the service (a partner's, say), which started the trace.
        event = meeting_failed()
        headers = Headers.for_event(event) | {"traceparent": f"00-{trace_id}-{'1' * 16}-01"}
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(
                rt.topics.meetings,
                event.to_json_bytes(),
                key=str(event.appointment_id).encode(),
                headers=[(name, value.encode()) for name, value in headers.items()],
            )
        finally:
            await producer.stop()
        reader = AIOKafkaConsumer(
            rt.topics.notifications,
            bootstrap_servers=kafka_bootstrap,
            auto_offset_reset="earliest",
        )
        await reader.start()
        try:
            answer = await wait_until(reader.getone, what="the handler's answer")
        finally:
            await reader.stop()

    assert seen == [int(trace_id, 16)]
    headers = dict(answer.headers)
    assert headers["traceparent"].decode().split("-")[1] == trace_id


def three_clients(kafka_bootstrap: str) -> Runtime:
    """A runtime reading three topics, each with a client in a group of its own (as
    notifications does)."""
    settings = ServiceSettings(
        kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=f"svc-{uuid.uuid4().hex[:8]}"
    )
    rt = build_runtime("notifications", settings)

    @rt.consumer.on(MeetingFailed)
    async def ignore(_: MeetingFailed) -> None:
        return None

    topics = [rt.topics.appointments, rt.topics.meetings, rt.topics.consents]
    rt.consumer.subscribe(*topics, separately=True)
    return rt


async def test_a_service_joins_all_its_groups_at_once(kafka_bootstrap: str) -> None:
    """A broker holds a new group's first join for a while (tansu 5 s, Kafka 3 s), and a
    subscriber's start waits for its join: started one after the other, a service with three
    subscriptions waited three joins before it was ready. Their starts must overlap."""
    rt = three_clients(kafka_bootstrap)
    spans: dict[str, list[float]] = {}
    loop = asyncio.get_running_loop()
    for subscriber in rt.broker.subscribers:
        start = subscriber.start

        async def timed(name: str = subscriber.group_id, start: Any = start) -> None:
            spans[name] = [loop.time()]
            await start()
            spans[name].append(loop.time())

        subscriber.start = timed  # type: ignore[method-assign]
    async with running(rt):
        assert len(spans) == 3, "one client, in a group of its own, per topic"
        assert all(subscriber.consumer.assignment() for subscriber in rt.broker.subscribers)
        entered = max(span[0] for span in spans.values())
        first_ready = min(span[1] for span in spans.values())
        assert entered < first_ready, f"a join waited for another: {spans}"


async def test_a_subscriber_that_fails_to_start_fails_the_start_once_the_others_are_up(
    kafka_bootstrap: str,
) -> None:
    rt = three_clients(kafka_bootstrap)
    topics = [rt.topics.appointments, rt.topics.meetings, rt.topics.consents]
    await ensure_topics(rt.settings, topics)
    broken, *others = rt.broker.subscribers
    started: list[str] = []

    async def refuse() -> None:
        raise RuntimeError("this one cannot start")

    broken.start = refuse  # type: ignore[method-assign]
    for subscriber in others:

        async def noted(start: Any = subscriber.start, name: str = subscriber.group_id) -> None:
            await start()
            started.append(name)

        subscriber.start = noted  # type: ignore[method-assign]
    try:
        with pytest.raises(RuntimeError, match="cannot start"):
            await start_broker(rt.broker)
        # The others joined their groups before the failure came out: nothing is left
        # starting while the caller stops the broker.
        assert sorted(started) == sorted(subscriber.group_id for subscriber in others)
    finally:
        await rt.broker.stop()
