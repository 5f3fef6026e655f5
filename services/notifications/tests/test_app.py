"""The service as `create_app` assembles it, its lifespan run for real, on the real broker
(KAFKA_BOOTSTRAP_SERVERS, else testcontainers, else tansu), PostgreSQL and the SMTP sink: events
go in on appointments.v1 and meetings.v1; emails come out in the sink and outcomes on
notifications.v1 — once each, through redeliveries, a 451 and a cut line, and reminders fire
from the service's own poller when the test moves its clock; a person's request for the email
again is answered once per request."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from visio_fakes.smtp_sink import start_sink
from visio_notifications.app import create_app
from visio_notifications.settings import NotificationsSettings
from visio_shared import AppointmentEvent, Envelope, Headers

PARTITIONS = 2


@dataclass
class Stack:
    app: Any
    settings: NotificationsSettings
    producer: AIOKafkaProducer
    outcomes: AIOKafkaConsumer
    sink: Any
    clock: Any
    mailbox: Any
    _seen: list[ConsumerRecord[Any, Any]] = field(default_factory=list)

    async def publish(self, topic: str, *events: AppointmentEvent) -> None:
        for event in events:
            await self.producer.send_and_wait(
                topic,
                event.to_json_bytes(),
                key=str(event.appointment_id).encode(),
                headers=[(k, v.encode()) for k, v in Headers.for_event(event).items()],
            )

    @property
    def topics(self) -> Any:
        return self.app.state.runtime.topics

    async def processed(self, *events: Envelope) -> bool:
        pool = self.app.state.runtime.db
        count = await pool.fetchval(
            "SELECT count(*) FROM processed_events WHERE event_id = ANY($1::uuid[])",
            [event.event_id for event in events],
        )
        return bool(count == len(events))

    async def outcomes_of(self, appointment_id: uuid.UUID) -> list[dict[str, Any]]:
        """Every outcome on notifications.v1 so far, for one appointment."""
        found = []
        batches = await self.outcomes.getmany(timeout_ms=200)
        self._seen.extend(record for records in batches.values() for record in records)
        for record in self._seen:
            value = json.loads(record.value)
            if value["appointment_id"] == str(appointment_id):
                found.append(value)
        return found


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap, clone_database, tmp_path_factory, kit) -> AsyncIterator[Stack]:
    clock = kit.Clock()
    sink = start_sink(tmp_path_factory.mktemp("mail"))
    async with clone_database() as database_url:
        settings = NotificationsSettings(
            kafka_bootstrap_servers=kafka_bootstrap,
            topic_prefix=f"test-notif-app-{uuid.uuid4().hex[:8]}",
            topic_partitions=PARTITIONS,
            database_url=database_url,
            smtp_port=sink.port,
            smtp_timeout_s=10,
            poll_interval_s=0.1,
            mail_retry_initial_s=60,
            link_keys=kit.LINK_KEYS,
            booking_public_url="https://rdv.caf.example/booking",
        )
        app = create_app(settings, clock=clock)
        async with app.router.lifespan_context(app):
            producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
            # No group: a plain reader from the start of every partition.
            outcomes = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=None)
            await producer.start()
            await outcomes.start()
            topic = app.state.runtime.topics.notifications
            outcomes.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
            await outcomes.seek_to_beginning()
            try:
                mailbox = kit.Mailbox(sink.handler.mail_dir)
                yield Stack(app, settings, producer, outcomes, sink, clock, mailbox)
            finally:
                await outcomes.stop()
                await producer.stop()
    sink.stop()


async def test_book_reschedule_cancel_once_each_through_redelivery_and_relay_faults(
    stack, make, until, parts
) -> None:
    box = stack.mailbox
    topics = stack.topics
    appointment = make.appointment(device="smartphone")
    meeting = make.meeting(appointment)
    moved = make.rescheduled(appointment, 2, appointment.start + timedelta(days=1))
    cancelled = make.cancelled(appointment, 3, reason="administrative")
    aid = appointment.appointment_id

    # The meeting first: it waits for its appointment.
    await stack.publish(topics.meetings, meeting)
    await stack.publish(topics.appointments, appointment)
    # Generous: a broker's first group assignment takes seconds (tansu: about 5).
    await until(lambda: box.keys(aid) == ["r1.confirmation"], within_s=60)

    stack.sink.handler.fail_next(1)  # 451 for the rescheduled email
    await stack.publish(topics.appointments, moved)
    await until(lambda: stack.sink.handler.deferred == 1)
    stack.clock.advance(seconds=stack.settings.mail_retry_initial_s)
    await until(lambda: box.keys(aid) == ["r1.confirmation", "r2.rescheduled"])

    stack.sink.handler.drop_next(1)  # the line cut during the cancellation
    await stack.publish(topics.appointments, cancelled)
    await until(lambda: stack.sink.handler.dropped == 1)
    stack.clock.advance(seconds=stack.settings.mail_retry_initial_s)
    await until(lambda: len(box.keys(aid)) == 3)

    # Everything again, as after a rebalance; then events that change nothing, whose
    # processing proves the duplicates before them (same partition) were read.
    await stack.publish(topics.meetings, meeting)
    await stack.publish(topics.appointments, appointment, moved, cancelled)
    meeting_again, stale = make.meeting(appointment), make.rescheduled(appointment, 2, moved.start)
    await stack.publish(topics.meetings, meeting_again)
    await stack.publish(topics.appointments, stale)
    await until(lambda: stack.processed(meeting_again, stale))

    assert box.keys(aid) == ["r1.confirmation", "r2.rescheduled", "r3.cancellation"]
    calendars = [parts.calendar(message) for message in box.messages(aid)]
    assert [str(c["METHOD"]) for c in calendars] == ["REQUEST", "REQUEST", "CANCEL"]
    events = [c.walk("VEVENT")[0] for c in calendars]
    assert {str(e["UID"]) for e in events} == {f"{aid}@visio-rdv.caf.fr"}
    assert [e["SEQUENCE"] for e in events] == [1, 2, 3]
    assert "La Caf de Paris a annulé votre rendez-vous visio" in parts.text(box.messages(aid)[2])

    async def three_outcomes() -> bool:
        return len(await stack.outcomes_of(aid)) >= 3

    await until(three_outcomes)
    outcomes = await stack.outcomes_of(aid)
    assert [(o["event_type"], o["kind"], o["revision"]) for o in outcomes] == [
        ("NotificationSent", "confirmation", 1),
        ("NotificationSent", "rescheduled", 2),
        ("NotificationSent", "cancellation", 3),
    ]
    assert {o["correlation_id"] for o in outcomes} == {str(appointment.correlation_id)}


async def test_reminders_fire_from_the_services_own_poller(stack, make, until) -> None:
    box = stack.mailbox
    appointment = make.appointment(start=stack.clock.now + timedelta(days=5))
    aid = appointment.appointment_id
    await stack.publish(stack.topics.appointments, appointment)
    await stack.publish(stack.topics.meetings, make.meeting(appointment))
    await until(lambda: box.keys(aid) == ["r1.confirmation"], within_s=60)

    stack.clock.set(appointment.start - timedelta(hours=48))
    await until(lambda: box.keys(aid) == ["r1.confirmation", "r1.reminder-2880"])
    stack.clock.set(appointment.start - timedelta(minutes=60))
    await until(lambda: box.keys(aid)[-1:] == ["r1.reminder-60"])

    async def reminder_outcomes() -> bool:
        kinds = [o["reminder_offset_minutes"] for o in await stack.outcomes_of(aid)]
        return kinds == [None, 2880, 60]

    await until(reminder_outcomes)


async def test_a_request_for_the_email_again_is_answered_once_per_request(
    stack, make, until, parts
) -> None:
    box = stack.mailbox
    topics = stack.topics
    appointment = make.appointment()
    aid = appointment.appointment_id
    await stack.publish(topics.appointments, appointment)
    await stack.publish(topics.meetings, make.meeting(appointment))
    await until(lambda: box.keys(aid) == ["r1.confirmation"], within_s=60)

    first, second = make.link_requested(appointment), make.link_requested(appointment)
    await stack.publish(topics.appointments, first, first)  # the same event, twice
    await stack.publish(topics.appointments, second)
    cancelled = make.cancelled(appointment, 2)
    late = make.link_requested(appointment, revision=2)
    await stack.publish(topics.appointments, cancelled, late)

    async def late_answered() -> bool:
        # Recorded once settled: after every email before it on the partition went out.
        outcome = await stack.app.state.runtime.db.fetchval(
            "SELECT outcome FROM link_requests WHERE event_id = $1", late.event_id
        )
        return outcome is not None

    await until(late_answered)
    assert (
        await stack.app.state.runtime.db.fetchval(
            "SELECT outcome FROM link_requests WHERE event_id = $1", late.event_id
        )
        == "appointment_cancelled"
    )

    assert box.keys(aid) == [
        "r1.confirmation",
        f"r1.link_resent-{first.event_id.hex}",
        f"r1.link_resent-{second.event_id.hex}",
        "r2.cancellation",
    ]
    resent = box.messages(aid)[1]
    assert "https://rdv.caf.example/booking/mon-rendez-vous/" in parts.text(resent)

    async def four_outcomes() -> bool:
        return len(await stack.outcomes_of(aid)) >= 4

    await until(four_outcomes)
    outcomes = await stack.outcomes_of(aid)
    assert [(o["kind"], o["causation_id"]) for o in outcomes[1:3]] == [
        ("link_resent", str(first.event_id)),
        ("link_resent", str(second.event_id)),
    ]
    assert len(outcomes) == 4  # nothing for the request after the cancellation


async def test_the_factory_does_no_io(settings) -> None:
    app = create_app(
        settings.model_copy(
            update={"database_url": "postgresql://nobody@127.0.0.1:1/none", "smtp_port": 1}
        )
    )
    runtime = app.state.runtime
    assert runtime.pool is None and runtime.background == []
    # One client per topic, in the service's group: a backlog on one never holds the other.
    topics = [subscriber.topic_names for subscriber in runtime.broker.subscribers]
    assert sorted(topics) == sorted([[runtime.topics.appointments], [runtime.topics.meetings]])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://notifications") as client:
        response = await client.get("/health/live")
    # In-process, on the test's own loop (a service started by `serve` says uvloop).
    assert response.json() == {"status": "ok", "event_loop": "asyncio"}
