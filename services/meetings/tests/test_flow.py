"""An appointment's whole story through the running service: `create_app` with its lifespan, a
real broker (the session's `kafka_bootstrap`: KAFKA_BOOTSTRAP_SERVERS, testcontainers or
tansu), PostgreSQL and the Graph emulator. Events go in on appointments.v1 and consents.v1;
the answers come out on meetings.v1, and the emulator holds what they say."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from visio_meetings.app import create_app
from visio_meetings.settings import MeetingsSettings
from visio_runtime.service import Runtime
from visio_runtime.testing import wait_until
from visio_shared import AppointmentEvent, AppointmentRequested, Headers

if TYPE_CHECKING:
    from conftest import Changes, EmulatorControl

OTHER_ADVISOR = "a1b2c3d4-0000-4000-8000-00000000ad02"


class Broker:
    """Publishes events the way booking and consent do, and reads meetings' answers."""

    def __init__(self, producer: AIOKafkaProducer, answers: AIOKafkaConsumer) -> None:
        self.producer = producer
        self.answers = answers

    async def send(self, topic: str, event: AppointmentEvent) -> None:
        await self.producer.send_and_wait(
            topic,
            event.to_json_bytes(),
            key=str(event.appointment_id).encode(),
            headers=[(k, v.encode()) for k, v in Headers.for_event(event).items()],
        )

    async def answer(self, appointment_id: uuid.UUID, event_type: str) -> dict[str, Any]:
        async for record in self.answers:
            answer: dict[str, Any] = json.loads(record.value)
            if (answer["appointment_id"], answer["event_type"]) == (
                str(appointment_id),
                event_type,
            ):
                return answer
        raise AssertionError("the consumer stopped")


@pytest.fixture
async def running(
    settings: MeetingsSettings, kafka_bootstrap: str
) -> AsyncIterator[tuple[Runtime, Broker]]:
    settings = settings.model_copy(
        update={
            "kafka_bootstrap_servers": kafka_bootstrap,
            "topic_partitions": 2,
            # The attendance poller on the real clock: a meeting that ended is due at once.
            "attendance_grace_s": 0,
            "attendance_poll_interval_s": 0.1,
            "attendance_retry_interval_s": 0.1,  # asked before the test scripts the report
            "attendance_max_attempts": 1000,
        }
    )
    app = create_app(settings)
    runtime: Runtime = app.state.runtime
    async with app.router.lifespan_context(app):
        answers = AIOKafkaConsumer(
            runtime.topics.meetings,
            bootstrap_servers=kafka_bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await answers.start()
        await producer.start()
        try:
            yield runtime, Broker(producer, answers)
        finally:
            await producer.stop()
            await answers.stop()


async def test_an_appointments_story_reaches_graph_and_is_answered(
    running: tuple[Runtime, Broker],
    control: EmulatorControl,
    make_appointment: Callable[..., AppointmentRequested],
    changes: type[Changes],
) -> None:
    runtime, broker = running
    topics = runtime.topics
    booked = make_appointment(recording_authorised=True)

    await broker.send(topics.appointments, booked)
    # Generous: a broker's first group assignment takes seconds (tansu: about 5).
    async with asyncio.timeout(90):
        ready = await broker.answer(booked.appointment_id, "MeetingReady")
    assert ready["causation_id"] == str(booked.event_id)
    [record] = await control.events()
    assert (ready["join_url"], ready["graph_event_id"]) == (record["join_url"], record["event_id"])
    assert ready["passcode"] and ready["join_meeting_id"]
    [meeting] = await control.online_meetings()
    assert meeting["meeting"]["allowRecording"] is True

    # The person withdraws recording (consents.v1) while the appointment moves.
    await broker.send(topics.consents, changes.withdrawn(booked))
    moving = changes.rescheduled(booked, booked.start.replace(day=11))
    await broker.send(topics.appointments, moving)
    async with asyncio.timeout(30):
        moved = await broker.answer(booked.appointment_id, "MeetingRescheduled")
    assert moved["join_url"] == ready["join_url"]

    async def recording_off() -> bool:
        return all(not m["meeting"]["allowRecording"] for m in await control.online_meetings())

    await wait_until(recording_off, 30, "recording to be turned off")

    # Another advisor, then a cancellation.
    await broker.send(topics.appointments, changes.reassigned(booked, OTHER_ADVISOR, revision=3))
    async with asyncio.timeout(30):
        again = await broker.answer(booked.appointment_id, "MeetingReady")
    assert (again["revision"], again["advisor_id"]) == (3, OTHER_ADVISOR)
    assert again["join_url"] != ready["join_url"]
    await broker.send(topics.appointments, changes.cancelled(booked, revision=4))
    async with asyncio.timeout(30):
        cancelled = await broker.answer(booked.appointment_id, "MeetingCancelled")
    assert (cancelled["advisor_id"], cancelled["graph_event_id"]) == (
        OTHER_ADVISOR,
        again["graph_event_id"],
    )

    stats = await control.stats()
    assert stats["events_per_external_id"] == {str(booked.appointment_id): 2}
    assert stats["live_events_per_external_id"] == {}
    assert await recording_off()
    # The reschedule, and the withdrawal's new body (« Enregistrement : non autorisé »).
    assert stats["calls"]["graph.events.update"] == 2
    assert stats["attendee_messages"] == {}  # nobody mailed by Outlook
    assert stats["teams_blocks_removed"] == 0


async def test_after_a_meeting_that_ended_its_attendance_is_published(
    running: tuple[Runtime, Broker],
    control: EmulatorControl,
    make_appointment: Callable[..., AppointmentRequested],
) -> None:
    runtime, broker = running
    ended = make_appointment().model_copy(
        update={"start": datetime.now(UTC) - timedelta(hours=2), "duration_minutes": 30}
    )
    await broker.send(runtime.topics.appointments, ended)
    async with asyncio.timeout(90):
        ready = await broker.answer(ended.appointment_id, "MeetingReady")
    await control.attendance(
        ready["online_meeting_id"],
        participants=[
            {
                "kind": "organizer",
                "intervals": [{"join_offset_seconds": 0, "leave_offset_seconds": 1800}],
            },
            {
                "kind": "anonymous",
                "intervals": [{"join_offset_seconds": 60, "leave_offset_seconds": 1700}],
            },
        ],
    )
    # The poller in the service finds it due (on its next round) and answers on meetings.v1.
    async with asyncio.timeout(30):
        recorded = await broker.answer(ended.appointment_id, "MeetingAttendanceRecorded")
    assert recorded["public_attended"] is True
    assert recorded["causation_id"] is None and recorded["correlation_id"] == str(
        ended.correlation_id
    )
