"""The app as it runs, minus Kafka: records go through the shared consumer (routing, errors,
dead letters) into the handlers, the real SMTP sink and PostgreSQL."""

from __future__ import annotations

import email
from email import policy

import httpx
import pytest
from aiokafka import ConsumerRecord
from visio_deploy.smtp_sink import start_sink
from visio_notifications.app import create_app
from visio_shared import Headers, NotificationSent


def _record(topic: str, event, offset: int = 0, value: bytes | None = None) -> ConsumerRecord:
    body = event.to_json_bytes() if value is None else value
    headers = [(name, text.encode()) for name, text in Headers.for_event(event).items()]
    return ConsumerRecord(
        topic=topic,
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=str(event.appointment_id).encode(),
        value=body,
        checksum=None,
        serialized_key_size=36,
        serialized_value_size=len(body),
        headers=headers,
    )


@pytest.fixture
def sink(tmp_path):
    controller = start_sink(tmp_path / "mail")
    try:
        yield controller
    finally:
        controller.stop()


@pytest.fixture
def running(settings, sink, service_pool, publisher):
    """The app's runtime with the test pool and a fake Kafka in place of the real ones."""
    app = create_app(settings.model_copy(update={"smtp_port": sink.port, "retry_attempts": 2}))
    runtime = app.state.runtime
    runtime.pool = service_pool
    runtime.broker = publisher
    runtime.consumer.broker = publisher
    return runtime


async def test_the_factory_does_no_io_and_subscribes_both_topics(settings) -> None:
    app = create_app(
        settings.model_copy(
            update={"database_url": "postgresql://nobody@127.0.0.1:1/none", "smtp_port": 1}
        )
    )
    runtime = app.state.runtime
    assert runtime.service == "notifications"
    assert runtime.pool is None
    [subscriber] = runtime.broker.subscribers
    assert sorted(subscriber.topic_names) == sorted(
        [runtime.topics.appointments, runtime.topics.meetings]
    )
    # Without its lifespan (nothing opened) the app still answers liveness.
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://notifications") as client:
        response = await client.get("/health/live")
    assert response.json() == {"status": "ok"}


async def test_records_from_both_topics_end_in_one_email(
    running, sink, publisher, new_appointment, new_meeting
) -> None:
    appointment = new_appointment()
    meeting = new_meeting(appointment)
    topics = running.topics

    assert await running.consumer.process(_record(topics.meetings, meeting)) == "handled"
    assert await running.consumer.process(_record(topics.appointments, appointment)) == "handled"
    assert await running.consumer.process(_record(topics.meetings, meeting)) == "handled"

    stored = list(sink.handler.mail_dir.glob("*.eml"))
    assert [path.name for path in stored] == [
        f"{appointment.appointment_id}.r1.confirmation@visio-rdv.caf.fr.eml"
    ]
    received = email.message_from_bytes(stored[0].read_bytes(), policy=policy.default)
    assert meeting.join_url in received.get_body(preferencelist=("plain",)).get_content()
    [sent] = [item for item in publisher.published if item["topic"] == topics.notifications]
    event = NotificationSent.model_validate_json(sent["message"])
    assert event.message_id == received["Message-ID"]


async def test_an_invalid_payload_is_dead_lettered(running, publisher, new_appointment) -> None:
    appointment = new_appointment()
    record = _record(
        running.topics.appointments, appointment, value=b'{"event_type": "AppointmentRequested"}'
    )
    assert await running.consumer.process(record) == "dead_lettered"
    [letter] = publisher.published
    assert letter["topic"] == running.topics.dlq("notifications")
