"""The Meeting flow end to end: the service as `create_app` assembles it, its lifespan run for
real, a real broker (KAFKA_BOOTSTRAP_SERVERS, else testcontainers, else tansu), PostgreSQL and
the Graph emulator. An AppointmentRequested goes in on appointments.v1; a MeetingReady comes
out on meetings.v1, for the meeting the emulator holds."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from visio_deploy.testing import kafka_broker
from visio_meetings.app import create_app
from visio_meetings.settings import MeetingsSettings
from visio_shared import AppointmentRequested, Headers

if TYPE_CHECKING:
    from conftest import EmulatorControl


@pytest.fixture(scope="module")
def bootstrap_servers() -> Iterator[str]:
    with kafka_broker() as servers:
        yield servers


async def next_answer(consumer: AIOKafkaConsumer, appointment_id: uuid.UUID) -> dict[str, Any]:
    async for record in consumer:
        answer: dict[str, Any] = json.loads(record.value)
        if answer.get("appointment_id") == str(appointment_id):
            return answer
    raise AssertionError("the consumer stopped")


async def test_an_appointment_on_kafka_is_answered_with_meeting_ready(
    settings: MeetingsSettings,
    bootstrap_servers: str,
    control: EmulatorControl,
    make_appointment: Callable[..., AppointmentRequested],
) -> None:
    settings = settings.model_copy(
        update={"kafka_bootstrap_servers": bootstrap_servers, "topic_partitions": 2}
    )
    app = create_app(settings)
    runtime = app.state.runtime
    event = make_appointment(recording_authorised=True)

    async with app.router.lifespan_context(app):
        answers = AIOKafkaConsumer(
            runtime.topics.meetings,
            bootstrap_servers=bootstrap_servers,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
        await answers.start()
        await producer.start()
        try:
            await producer.send_and_wait(
                runtime.topics.appointments,
                event.to_json_bytes(),
                key=str(event.appointment_id).encode(),
                headers=[(k, v.encode()) for k, v in Headers.for_event(event).items()],
            )
            # Generous: a broker's first group assignment takes seconds (tansu: about 5).
            async with asyncio.timeout(90):
                answer = await next_answer(answers, event.appointment_id)
        finally:
            await producer.stop()
            await answers.stop()

    assert answer["event_type"] == "MeetingReady"
    assert answer["causation_id"] == str(event.event_id)
    [record] = await control.events()
    assert answer["join_url"] == record["join_url"]
    assert answer["graph_event_id"] == record["event_id"]
    [meeting] = await control.online_meetings()
    assert meeting["meeting"]["allowRecording"] is True
