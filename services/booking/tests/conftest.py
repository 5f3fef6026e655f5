"""Booking on real parts: one app per test module, on a database of its own and the session's
broker, with a key per kind of caller. The harness carries the helpers the tests share."""

from __future__ import annotations

import uuid
import zoneinfo
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from fastapi import FastAPI
from pydantic import SecretStr
from visio_booking.app import create_app
from visio_booking.keys import API_KEYS
from visio_booking.settings import BookingSettings
from visio_booking.store import SCHEMA
from visio_runtime.db import migrate, role_dsn
from visio_runtime.service import Runtime
from visio_runtime.testing import wait_until
from visio_shared import MeetingReady, NotificationSent
from visio_testing import create_database, drop_database

CALLERS = {
    # name: scopes
    "caf-portal": ["appointments:write", "appointments:read"],
    "advisor-tools": ["appointments:write", "appointments:read"],
    "dashboard": ["appointments:read"],
    "ops": ["appointments:admin"],
}


# The partner systems on Kafka, as the local stack declares them. `caf-portal` is also an API
# key's name: over Kafka it is another caller (`kafka:caf-portal`).
PARTNERS = ["caf-portal", "national-scheduler"]

# The runtime's deadline poll, under the name these tests read best with.
until = wait_until


def booking_body(days: int = 3, **overrides: Any) -> dict[str, Any]:
    start = (datetime.now(UTC) + timedelta(days=days)).replace(microsecond=0)
    body: dict[str, Any] = {
        "caf_code": "075",
        # An advisor of their own: booking refuses two live appointments of one advisor at
        # once (409), and tests book the same start many times.
        "advisor": {"id": str(uuid.uuid4()), "display_name": "Claire Martin"},
        "start": start.astimezone(zoneinfo.ZoneInfo("Europe/Paris")).isoformat(),
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
    body.update(overrides)
    return body


def confirmation(appointment_id: str) -> tuple[MeetingReady, NotificationSent]:
    """What meetings and notifications say of a first revision that went well: the meeting is
    ready, the confirmation email sent."""
    lineage: dict[str, Any] = {
        "appointment_id": uuid.UUID(appointment_id),
        "revision": 1,
        "correlation_id": uuid.UUID(appointment_id),
    }
    ready = MeetingReady(
        **lineage,
        join_url="https://teams.microsoft.com/l/meetup-join/abc",
        graph_event_id="AAMkAD",
        advisor_id="6f1c2a4e-8b1d-4c55-9a51-2f9e6f0c1d11",
    )
    sent = NotificationSent(**lineage, kind="confirmation", message_id=f"<{appointment_id}@x>")
    return ready, sent


@dataclass
class Booking:
    app: FastAPI
    client: httpx.AsyncClient
    owner_dsn: str
    keys: dict[str, str]

    until = staticmethod(until)
    body = staticmethod(booking_body)
    confirmation = staticmethod(confirmation)

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    def auth(self, caller: str = "caf-portal", **headers: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[caller]}", **headers}

    async def book(self, caller: str = "caf-portal", **overrides: Any) -> str:
        answer = await self.client.post(
            "/v1/appointments", json=booking_body(**overrides), headers=self.auth(caller)
        )
        assert answer.status_code == 202, answer.text
        appointment_id: str = answer.json()["appointment_id"]
        return appointment_id

    async def view(self, appointment_id: str, caller: str = "caf-portal") -> dict[str, Any]:
        answer = await self.client.get(
            f"/v1/appointments/{appointment_id}", headers=self.auth(caller)
        )
        assert answer.status_code == 200, answer.text
        view: dict[str, Any] = answer.json()
        return view

    async def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """Look (or reach) behind the API with the owner's connection."""
        conn = await asyncpg.connect(self.owner_dsn, server_settings={"search_path": "booking"})
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    async def records(
        self,
        topic: str,
        enough: Callable[[list[ConsumerRecord[bytes, bytes]]], bool],
        seconds: float = 30,
    ) -> list[ConsumerRecord[bytes, bytes]]:
        return await read_topic(
            self.runtime.settings.kafka_bootstrap_servers,
            topic,
            enough,
            seconds,
            self.runtime.settings.topic_partitions,
        )


async def read_topic(
    bootstrap: str,
    topic: str,
    enough: Callable[[list[ConsumerRecord[bytes, bytes]]], bool],
    seconds: float = 30,
    partitions: int = 6,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of the topic from the start, until `enough` says so. Partitions are
    assigned by hand: no consumer group, so no group join to wait for."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        consumer.assign([TopicPartition(topic, partition) for partition in range(partitions)])
        await consumer.seek_to_beginning()

        async def collected() -> bool:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
            return enough(records)

        await until(collected, seconds, f"enough records on {topic}")
    finally:
        await consumer.stop()
    return records


async def start_booking(
    postgres_url: str, kafka_bootstrap: str, **settings: Any
) -> tuple[Booking, Callable[[], Awaitable[None]]]:
    """A migrated database, a key per caller, and the app running; returns a closer."""
    owner_dsn = await create_database(postgres_url, prefix="visio_booking_test")
    await migrate(owner_dsn, SCHEMA, "visio_booking")
    conn = await asyncpg.connect(owner_dsn)
    try:
        keys = {name: await API_KEYS.create(conn, name, scopes) for name, scopes in CALLERS.items()}
    finally:
        await conn.close()
    defaults: dict[str, Any] = {
        "topic_prefix": f"booking-test-{uuid.uuid4().hex[:8]}",
        "partners": PARTNERS,
        "outbox_poll_interval_s": 0.2,
        "outbox_standby_interval_s": 0.2,
        "retry_initial_delay_s": 0.01,
    }
    app = create_app(
        BookingSettings(
            database_url=SecretStr(role_dsn(owner_dsn, "visio_booking", "visio_booking")),
            kafka_bootstrap_servers=kafka_bootstrap,
            **(defaults | settings),
        )
    )
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://booking")

    async def close() -> None:
        await client.aclose()
        await lifespan.__aexit__(None, None, None)
        await drop_database(postgres_url, owner_dsn)

    return Booking(app, client, owner_dsn, keys), close


@pytest.fixture
def wait_for() -> Callable[[Callable[[], Awaitable[Any]], float, str], Awaitable[Any]]:
    """`until`, for tests that run without the harness."""
    return until


@pytest.fixture(name="booking_body")
def booking_body_fixture() -> Callable[..., dict[str, Any]]:
    """`booking_body`, for a test that needs bodies before any app runs."""
    return booking_body


@pytest.fixture(name="start_booking", scope="session")
def start_booking_fixture() -> Callable[
    ..., Awaitable[tuple[Booking, Callable[[], Awaitable[None]]]]
]:
    """`start_booking`, for a test that needs an app of its own (on its own broker, say)."""
    return start_booking


@pytest.fixture(scope="module")
async def booking(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[Booking]:
    harness, close = await start_booking(postgres_url, kafka_bootstrap)
    try:
        yield harness
    finally:
        await close()
