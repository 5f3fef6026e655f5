"""The shared consumption rules, on the real test broker: handled once, unknown types skipped
and counted, poison and exhausted retries dead-lettered with everything needed to replay."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from visio_runtime.errors import Transient
from visio_runtime.service import Runtime, build_runtime
from visio_runtime.settings import ServiceSettings
from visio_shared import MeetingFailed, publish_event


@pytest.fixture
async def runtime(kafka_bootstrap: str) -> AsyncIterator[tuple[Runtime, list[Any]]]:
    settings = ServiceSettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"rt-{uuid.uuid4().hex[:8]}",
        retry_attempts=3,
        retry_initial_delay_s=0.01,
    )
    runtime = build_runtime("meetings", settings)
    handled: list[MeetingFailed] = []
    attempts: dict[str, int] = {}

    @runtime.consumer.on(MeetingFailed)
    async def on_failed(event: MeetingFailed) -> None:
        attempts[event.reason] = attempts.get(event.reason, 0) + 1
        if event.reason == "always-broken":
            raise RuntimeError("the handler has a bug")
        if event.reason == "flaky" and attempts[event.reason] < 3:
            raise Transient("peer busy", retry_after=0.01)
        handled.append(event)

    runtime.consumer.subscribe(runtime.topics.meetings)
    from visio_runtime.kafka import ensure_topics

    await ensure_topics(settings, runtime.topics.all())
    await runtime.broker.start()
    try:
        yield runtime, handled
    finally:
        await runtime.broker.stop()


def failed(reason: str) -> MeetingFailed:
    return MeetingFailed(
        appointment_id=uuid.uuid4(), revision=1, correlation_id=uuid.uuid4(), reason=reason
    )


async def read_dead_letters(runtime: Runtime, count: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        runtime.topics.dlq("meetings"),
        bootstrap_servers=runtime.settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        group_id=f"dlq-reader-{uuid.uuid4().hex[:6]}",
    )
    await consumer.start()
    letters: list[Any] = []
    try:
        async with asyncio.timeout(60):
            while len(letters) < count:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    letters.extend(records)
    finally:
        await consumer.stop()
    return letters


async def test_every_kind_of_message_meets_its_fate(runtime: Any) -> None:
    rt, handled = runtime
    topic = rt.topics.meetings
    good, flaky, broken = failed("fine"), failed("flaky"), failed("always-broken")
    for event in (good, flaky, broken):
        await publish_event(rt.broker, topic, event)
    await rt.broker.publish(b"not json", topic, key=b"k1", headers={"origin": "test"})
    await rt.broker.publish(b'{"event_type": "SomethingNew"}', topic, key=b"k2")
    await rt.broker.publish(b'{"event_type": "MeetingFailed", "reason": 3}', topic, key=b"k3")

    letters = await read_dead_letters(rt, 3)
    by_key = {letter.key: letter for letter in letters}
    headers = {key: dict((n, v.decode()) for n, v in by_key[key].headers) for key in by_key}

    assert by_key[b"k1"].value == b"not json"
    assert headers[b"k1"]["origin"] == "test"  # the original headers travel with it
    assert headers[b"k1"]["dlq.source_topic"] == topic
    assert headers[b"k1"]["dlq.consumer_group"] == rt.topics.group("meetings")
    assert "not JSON" in headers[b"k1"]["dlq.reason"]
    assert int(headers[b"k1"]["dlq.source_offset"]) >= 0

    assert "appointment_id: Field required" in headers[b"k3"]["dlq.reason"]
    assert "reason: Input should be a valid string" in headers[b"k3"]["dlq.reason"]

    broken_key = str(broken.appointment_id).encode()
    assert headers[broken_key]["dlq.error_class"] == "RuntimeError"
    assert headers[broken_key]["dlq.attempts"] == "3"
    assert "gave up after 3 attempts" in headers[broken_key]["dlq.reason"]
    assert by_key[broken_key].value == broken.to_json_bytes()

    # The good and the flaky (after two transient failures) were handled, once each.
    assert sorted(event.reason for event in handled) == ["fine", "flaky"]
    assert rt.metrics.value("events_skipped_total", event_type="SomethingNew") == 1
    assert rt.metrics.value("events_retried_total", event_type="MeetingFailed") == 4
    assert 'visio_events_dead_lettered_total{service="meetings",error_class="Poison"} 1' in (
        rt.metrics.render()
    )
