"""Booking on real parts: the API on a fresh PostgreSQL database, the outbox publishing to the
test broker, and booking following meetings' and notifications' events to `confirmed`."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from pydantic import SecretStr
from visio_booking.app import create_app
from visio_booking.keys import create_api_key
from visio_booking.settings import BookingSettings
from visio_booking.store import SCHEMA
from visio_runtime.db import migrate, role_dsn
from visio_shared import MeetingReady, NotificationSent, Topics, publish_event


async def until(condition: Any, seconds: float, what: str) -> Any:
    """Poll `condition` until it returns something truthy, with a deadline."""
    try:
        async with asyncio.timeout(seconds):
            while not (result := await condition()):
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None
    return result


@pytest.fixture
async def booking(
    fresh_database: str, kafka_bootstrap: str
) -> AsyncIterator[tuple[httpx.AsyncClient, Any, dict[str, str]]]:
    await migrate(fresh_database, SCHEMA, "visio_booking")
    conn = await asyncpg.connect(fresh_database)
    keys = {
        "writer": await create_api_key(conn, "portal", ["appointments:write", "appointments:read"]),
        "reader": await create_api_key(conn, "dashboard", ["appointments:read"]),
    }
    await conn.close()
    settings = BookingSettings(
        database_url=SecretStr(role_dsn(fresh_database, "visio_booking", "visio_booking")),
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"booking-test-{uuid.uuid4().hex[:8]}",
        outbox_poll_interval_s=0.1,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://booking") as client:
            yield client, app.state.runtime, keys


def booking_body() -> dict[str, Any]:
    start = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    return {
        "caf_code": "075",
        "advisor": {"id": "advisor-1", "display_name": "Claire Martin"},
        "start": start.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Paris")).isoformat(),
        "duration_minutes": 30,
        "timezone": "Europe/Paris",
        "subject": "Prime d'activité",
        "user": {
            "first_name": "Jeanne",
            "last_name": "Dupont",
            "email": "jeanne.dupont@example.fr",
            "device": "computer",
        },
        "consent": {
            "cgu_version": "1",
            "accepted_at": datetime.now(UTC).isoformat(),
            "recording_authorised": False,
        },
    }


async def test_a_booking_is_stored_published_and_followed_to_confirmed(booking: Any) -> None:
    client, runtime, keys = booking
    auth = {"Authorization": f"Bearer {keys['writer']}"}
    answer = await client.post("/v1/appointments", json=booking_body(), headers=auth)
    assert answer.status_code == 202, answer.text
    appointment_id = answer.json()["appointment_id"]

    # The outbox relay published AppointmentRequested, keyed by the appointment, with headers.
    topics: Topics = runtime.topics
    consumer = AIOKafkaConsumer(
        topics.appointments,
        bootstrap_servers=runtime.settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        group_id=f"reader-{uuid.uuid4().hex[:6]}",
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 30)
    finally:
        await consumer.stop()
    assert record.key == appointment_id.encode()
    headers = {name: value.decode() for name, value in record.headers}
    assert headers["event_type"] == "AppointmentRequested"
    event = json.loads(record.value)
    assert event["appointment_id"] == appointment_id
    assert event["consent"]["recording_authorised"] is False
    assert headers["event_id"] == event["event_id"]

    view = (await client.get(f"/v1/appointments/{appointment_id}", headers=auth)).json()
    assert view["status"] == "requested" and view["join_url"] is None

    # Meetings and notifications report; booking follows. A redelivery changes nothing.
    correlation = uuid.UUID(event["correlation_id"])
    ready = MeetingReady(
        appointment_id=uuid.UUID(appointment_id),
        revision=1,
        correlation_id=correlation,
        join_url="https://teams.microsoft.com/l/meetup-join/abc",
        graph_event_id="AAMkAD",
        advisor_id="advisor-1",
    )
    sent = NotificationSent(
        appointment_id=uuid.UUID(appointment_id),
        revision=1,
        correlation_id=correlation,
        kind="confirmation",
        message_id="<x@visio-rdv.caf.fr>",
    )
    # The email's event arriving first must not be undone by the meeting's.
    await publish_event(runtime.broker, topics.notifications, sent)
    await publish_event(runtime.broker, topics.meetings, ready)
    await publish_event(runtime.broker, topics.meetings, ready)

    async def followed() -> dict[str, Any] | None:
        view = (await client.get(f"/v1/appointments/{appointment_id}", headers=auth)).json()
        done = view["join_url"] and len(view["history"]) == 3
        return view if done else None

    view = await until(followed, 60, "booking to follow both events")
    assert view["status"] == "confirmed"
    assert view["join_url"] == "https://teams.microsoft.com/l/meetup-join/abc"
    assert sorted(entry["status"] for entry in view["history"]) == [
        "confirmed",
        "meeting_ready",
        "requested",
    ]


async def test_callers_need_a_key_with_the_scope(booking: Any) -> None:
    client, _, keys = booking
    anonymous = await client.post("/v1/appointments", json=booking_body())
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"
    wrong = await client.post(
        "/v1/appointments", json=booking_body(), headers={"Authorization": "Bearer nope"}
    )
    assert wrong.status_code == 401
    reader = await client.post(
        "/v1/appointments",
        json=booking_body(),
        headers={"Authorization": f"Bearer {keys['reader']}"},
    )
    assert reader.status_code == 403
    assert "appointments:write" in reader.json()["detail"]


async def test_errors_are_problem_documents(booking: Any) -> None:
    client, _, keys = booking
    auth = {"Authorization": f"Bearer {keys['writer']}"}
    missing = await client.get(f"/v1/appointments/{uuid.uuid4()}", headers=auth)
    assert missing.status_code == 404
    assert missing.json()["type"] == "https://visio-rdv.caf.fr/problems/not-found"
    malformed = await client.post("/v1/appointments", content=b"{not json", headers=auth)
    assert malformed.status_code == 400
    huge = await client.post("/v1/appointments", content=b" " * 70_000, headers=auth)
    assert huge.status_code == 413
    invalid = await client.post(
        "/v1/appointments", json={**booking_body(), "caf_code": "12"}, headers=auth
    )
    assert invalid.status_code == 422
    assert invalid.json()["errors"] == [
        {"field": "caf_code", "message": "String should match pattern '^\\d{3}$'"}
    ]


async def test_current_cgu_and_openapi_are_published(booking: Any) -> None:
    client, _, _ = booking
    cgu = (await client.get("/v1/cgu/current")).json()
    assert cgu["version"] == "1" and len(cgu["sha256"]) == 64 and cgu["url"].startswith("https://")
    spec = (await client.get("/openapi.json")).json()
    assert "/v1/appointments" in spec["paths"]
    request_schema = spec["paths"]["/v1/appointments"]["post"]["requestBody"]
    assert "caf_code" in json.dumps(request_schema)
