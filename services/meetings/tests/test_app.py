"""The service as assembled by `create_app`: a record on appointments.v1 goes through the shared
consumer (parsing, routing, retries) to the handler, and out as an answer on meetings.v1.

Kafka itself is replaced by a recording publisher here; the broker round trip belongs to the
system's end-to-end tests."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import asyncpg
from aiokafka import ConsumerRecord
from visio_meetings.app import create_app
from visio_meetings.settings import MeetingsSettings
from visio_runtime.service import Runtime
from visio_shared import AppointmentRequested, Headers

if TYPE_CHECKING:
    from conftest import EmulatorControl, FakePublisher


def record_of(event: AppointmentRequested, topic: str) -> ConsumerRecord[bytes, bytes]:
    value = event.to_json_bytes()
    key = str(event.appointment_id).encode()
    return ConsumerRecord(
        topic=topic,
        partition=0,
        offset=0,
        timestamp=int(time.time() * 1000),
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key),
        serialized_value_size=len(value),
        headers=[(name, v.encode()) for name, v in Headers.for_event(event).items()],
    )


def test_the_factory_does_no_io_and_subscribes_to_appointments(
    settings: MeetingsSettings,
) -> None:
    unreachable = settings.model_copy(
        update={"authority": "https://127.0.0.1:1/tenant", "kafka_bootstrap_servers": "127.0.0.1:1"}
    )
    app = create_app(unreachable)

    runtime: Runtime = app.state.runtime
    [subscriber] = runtime.broker.subscribers
    assert subscriber.topic_names == [runtime.topics.appointments]
    assert app.state.clients.graph is None  # opened by the start hook, not the factory


async def test_a_throttled_appointment_is_retried_then_answered(
    settings: MeetingsSettings,
    pool: asyncpg.Pool,
    control: EmulatorControl,
    publisher: FakePublisher,
    make_appointment: Callable[..., AppointmentRequested],
) -> None:
    quick = settings.model_copy(update={"retry_initial_delay_s": 0.01, "retry_max_delay_s": 0.05})
    app = create_app(quick)
    runtime: Runtime = app.state.runtime
    runtime.pool = pool
    runtime.broker = publisher  # type: ignore[assignment]
    runtime.consumer.broker = publisher  # type: ignore[assignment]
    for hook in runtime.on_start:
        await hook(runtime)
    await control.faults(throttle_rate=1.0, endpoints=["graph.events.create"], max_faults=1)
    event = make_appointment()
    try:
        outcome = await runtime.consumer.process(record_of(event, runtime.topics.appointments))
    finally:
        for hook in runtime.on_stop:
            await hook(runtime)

    assert outcome == "handled"
    assert runtime.metrics.value("events_retried_total", event_type="AppointmentRequested") == 1
    [sent] = publisher.sent
    assert sent.topic == runtime.topics.meetings
    answer = json.loads(sent.message)
    assert answer["event_type"] == "MeetingReady"
    assert answer["appointment_id"] == str(event.appointment_id)
    assert (await control.stats())["responses"]["graph.events.create"] == {"429": 1, "201": 1}
    assert app.state.clients.graph is None  # closed by the stop hook


async def test_an_event_type_meetings_does_not_handle_is_skipped(
    settings: MeetingsSettings,
    publisher: FakePublisher,
    control: EmulatorControl,
    make_appointment: Callable[..., AppointmentRequested],
) -> None:
    app = create_app(settings)
    runtime: Runtime = app.state.runtime
    runtime.consumer.broker = publisher  # type: ignore[assignment]
    event = make_appointment()
    record = record_of(event, runtime.topics.appointments)
    headers = [
        (k, b"AppointmentCancelledSomeday" if k == "event_type" else v) for k, v in record.headers
    ]
    skipped = dataclasses.replace(record, headers=headers)

    assert await runtime.consumer.process(skipped) == "skipped"
    assert publisher.sent == []
    assert (await control.stats())["calls"] == {}
