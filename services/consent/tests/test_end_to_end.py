"""The consent service running as it runs in production, on a real broker (tansu here) and a
real PostgreSQL: an AppointmentRequested on the topic is recorded; the person's records come
back over HTTP; a withdrawal over HTTP reaches the consents topic for meetings; the checkpoint
schedule signs the head into the file and onto the checkpoint topic; what happened in the
meeting, read from meetings.v1, joins the person's records."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from visio_consent.app import create_app
from visio_consent.checkpoints import read_file, read_topic
from visio_consent.keys import API_KEYS
from visio_consent.settings import ConsentSettings
from visio_runtime.testing import wait_until
from visio_shared import (
    AppointmentRequested,
    ConsentRecorded,
    Envelope,
    RecordingConsentWithdrawn,
    parse_event,
    publish_event,
)
from visio_shared.events import MeetingAttendanceRecorded

T = TypeVar("T")


async def events_on(bootstrap: str, topic: str) -> list[Envelope]:
    """Every event on a topic so far, read without a consumer group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        events: list[Envelope] = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                events += [parse_event(record.value) for record in records]
        return events
    finally:
        await consumer.stop()


async def test_record_access_withdraw_and_checkpoint_end_to_end(
    settings: ConsentSettings,
    superuser: asyncpg.Connection,
    kafka_bootstrap: str,
    make_event: Callable[..., AppointmentRequested],
) -> None:
    settings = settings.model_copy(
        update={
            "kafka_bootstrap_servers": kafka_bootstrap,
            "topic_partitions": 2,
            "checkpoint_interval_s": 0.2,
        }
    )
    key = await API_KEYS.create(superuser, "caf.fr", ["consent:read", "consent:withdraw"])
    auth = {"Authorization": f"Bearer {key}"}
    app = create_app(settings)
    runtime: Any = app.state.runtime
    event = make_event(timezone="Indian/Reunion")

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://consent") as client:
            await publish_event(runtime.broker, runtime.topics.appointments, event)

            async def recorded() -> list[Any] | None:
                answer = await client.post(
                    "/v1/access", json={"email": event.user.email}, headers=auth
                )
                return answer.json()["records"] or None

            records = await wait_until(recorded)
            assert [record["kind"] for record in records] == [
                "cgu_accepted",
                "recording_authorised",
            ]

            path = f"/v1/appointments/{event.appointment_id}/recording-withdrawal"
            withdrawal = await client.post(path, headers=auth)
            assert withdrawal.status_code == 201, withdrawal.text

            async def announced() -> list[Envelope] | None:
                mine = [
                    e
                    for e in await events_on(kafka_bootstrap, runtime.topics.consents)
                    if getattr(e, "appointment_id", None) == event.appointment_id
                ]
                return mine if len(mine) == 3 else None

            request_recorded, withdrawn, withdrawal_recorded = await wait_until(announced)
            assert isinstance(request_recorded, ConsentRecorded)
            assert isinstance(withdrawn, RecordingConsentWithdrawn)
            assert str(withdrawn.event_id) == withdrawal.json()["event_id"]
            assert withdrawn.correlation_id == event.correlation_id
            assert isinstance(withdrawal_recorded, ConsentRecorded)
            assert [e.kind for e in withdrawal_recorded.entries] == ["recording_withdrawn"]

            # The schedule signs the new head, into the file and onto the topic.
            async def signed_head() -> bool:
                return any(cp.seq == 3 for cp in read_file(settings.checkpoints_path))

            await wait_until(signed_head)
            on_topic = await read_topic(settings, runtime.topics.consent_checkpoints)
            assert 3 in {checkpoint.seq for checkpoint in on_topic}
            report = (await client.get("/v1/ledger/verify", headers=auth)).json()
            assert report["ok"] and report["count"] == 3 and report["checkpoints"] >= 1

            # After the meeting: meetings' report on meetings.v1 becomes a connection record.
            attendance = MeetingAttendanceRecorded(
                **event.caused(appointment_id=event.appointment_id, revision=1),
                online_meeting_id="meeting-1",
                report_id="report-1",
                meeting_start=event.start,
                meeting_end=event.start,
                participants=[],
                public_attended=False,
            )
            await publish_event(runtime.broker, runtime.topics.meetings, attendance)

            async def connected() -> list[Any] | None:
                found = await recorded()
                return found if found and found[-1]["kind"] == "connection" else None

            *_, connection = await wait_until(connected)
            assert connection["record"]["source_event_id"] == str(attendance.event_id)
            report = (await client.get("/v1/ledger/verify", headers=auth)).json()
            assert report["ok"] and report["count"] == 4
