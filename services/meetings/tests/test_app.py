"""The service as assembled by `create_app`: a record on appointments.v1 or consents.v1 goes
through the shared consumer (parsing, routing, retries) to the handler, and out as an answer on
meetings.v1.

Kafka itself is replaced by a recording publisher here; test_flow runs the real broker."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from visio_meetings.app import create_app
from visio_meetings.settings import MeetingsSettings
from visio_runtime.service import Runtime
from visio_shared import AppointmentRequested

if TYPE_CHECKING:
    from conftest import Changes, EmulatorControl, FakePublisher

Make = Callable[..., AppointmentRequested]


def test_the_factory_does_no_io_and_subscribes_to_appointments_and_consents(
    settings: MeetingsSettings,
) -> None:
    unreachable = settings.model_copy(
        update={"authority": "https://127.0.0.1:1/tenant", "kafka_bootstrap_servers": "127.0.0.1:1"}
    )
    app = create_app(unreachable)

    runtime: Runtime = app.state.runtime
    [subscriber] = runtime.broker.subscribers
    assert subscriber.topic_names == [runtime.topics.appointments, runtime.topics.consents]
    assert app.state.clients.graph is None  # opened by the start hook, not the factory


async def test_a_throttled_appointment_is_retried_then_answered(
    service: Runtime,
    control: EmulatorControl,
    publisher: FakePublisher,
    make_appointment: Make,
    to_record: Callable[..., Any],
) -> None:
    # Retry-After longer than the client waits in process: the consumer's retry takes over.
    await control.faults(
        throttle_rate=1.0, retry_after_seconds=1, endpoints=["graph.events.create"], max_faults=1
    )
    event = make_appointment()

    outcome = await service.consumer.process(to_record(event, service.topics.appointments))

    assert outcome == "handled"
    assert service.metrics.value("events_retried_total", event_type="AppointmentRequested") == 1
    [sent] = publisher.calls
    assert sent.topic == service.topics.meetings
    answer = json.loads(sent.message)
    assert answer["event_type"] == "MeetingReady"
    assert answer["appointment_id"] == str(event.appointment_id)
    assert (await control.stats())["responses"]["graph.events.create"] == {"429": 1, "201": 1}


async def test_a_withdrawal_on_consents_reaches_the_meeting(
    service: Runtime,
    control: EmulatorControl,
    make_appointment: Make,
    changes: type[Changes],
    to_record: Callable[..., Any],
) -> None:
    booked = make_appointment(recording_authorised=True)
    await service.consumer.process(to_record(booked, service.topics.appointments))

    withdrawal = to_record(changes.withdrawn(booked), service.topics.consents)
    assert await service.consumer.process(withdrawal) == "handled"

    [meeting] = await control.online_meetings()
    assert meeting["meeting"]["allowRecording"] is False


async def test_an_event_type_meetings_does_not_handle_is_skipped(
    service: Runtime,
    publisher: FakePublisher,
    control: EmulatorControl,
    make_appointment: Make,
    to_record: Callable[..., Any],
) -> None:
    record = to_record(make_appointment(), service.topics.consents)
    headers = [(k, b"ConsentRecorded" if k == "event_type" else v) for k, v in record.headers]
    skipped = dataclasses.replace(record, headers=headers)

    assert await service.consumer.process(skipped) == "skipped"
    assert publisher.calls == []
    assert (await control.stats())["calls"] == {}
