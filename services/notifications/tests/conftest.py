"""Fixtures: events as booking and meetings would send them, fakes for the mail relay and
Kafka, and a throwaway PostgreSQL database migrated with the service's own SQL."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from visio_notifications.handlers import Deps
from visio_notifications.settings import NotificationsSettings
from visio_notifications.store import SCHEMA
from visio_runtime.db import create_pool, migrate, role_dsn
from visio_shared import (
    Advisor,
    AppointmentRequested,
    ConsentGiven,
    Device,
    MeetingReady,
    Person,
    Topics,
    current_cgu,
    parse_event,
)

JOIN_URL = (
    "https://teams.microsoft.com/l/meetup-join/19%3ameeting_ZjA4NDk0%40thread.v2/0"
    "?context=%7b%22Tid%22%3a%22t1%22%2c%22Oid%22%3a%22o1%22%7d"
)


def make_appointment(
    *,
    appointment_id: uuid.UUID | None = None,
    correlation_id: uuid.UUID | None = None,
    revision: int = 1,
    start: datetime | None = None,
    timezone: str = "Europe/Paris",
    caf_code: str = "750",
    device: Device = Device.COMPUTER,
    recording_authorised: bool = True,
    advisor_name: str = "Claire Martin",
    first_name: str = "Amina",
    last_name: str = "Hoarau",
    email: str = "amina.hoarau@example.org",
    subject: str = "Prime d'activité",
    duration_minutes: int = 30,
) -> AppointmentRequested:
    cgu = current_cgu()
    return AppointmentRequested(
        appointment_id=appointment_id or uuid.uuid4(),
        correlation_id=correlation_id or uuid.uuid4(),
        revision=revision,
        caf_code=caf_code,
        advisor=Advisor(id="advisor-1", display_name=advisor_name),
        start=start or datetime(2026, 12, 3, 9, 0, tzinfo=UTC),
        duration_minutes=duration_minutes,
        timezone=timezone,
        subject=subject,
        user=Person(first_name=first_name, last_name=last_name, email=email, device=device),
        consent=ConsentGiven(
            cgu_version=cgu.version,
            cgu_sha256=cgu.sha256,
            accepted_at=datetime(2026, 11, 20, 8, 30, tzinfo=UTC),
            recording_authorised=recording_authorised,
            channel="api",
        ),
        calling_system="caf.fr",
    )


def make_meeting(
    appointment: AppointmentRequested, *, revision: int | None = None, join_url: str = JOIN_URL
) -> MeetingReady:
    return MeetingReady(
        appointment_id=appointment.appointment_id,
        correlation_id=appointment.correlation_id,
        causation_id=appointment.event_id,
        revision=appointment.revision if revision is None else revision,
        join_url=join_url,
        graph_event_id="AAMkAGI2TGuLAAA=",
        advisor_id=appointment.advisor.id,
    )


@pytest.fixture
def settings() -> NotificationsSettings:
    return NotificationsSettings(topic_prefix="test-notif")


@dataclass
class FakePublisher:
    """Records what would go to Kafka; can be told to fail the next publications."""

    published: list[dict[str, Any]] = field(default_factory=list)
    fail_next: int = 0

    async def publish(
        self,
        message: Any,
        topic: str,
        *,
        key: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("broker unavailable")
        self.published.append({"message": message, "topic": topic, "key": key, "headers": headers})

    def events(self, appointment_id: uuid.UUID | None = None) -> list[Any]:
        events = [parse_event(item["message"]) for item in self.published]
        if appointment_id is None:
            return events
        return [
            event for event in events if getattr(event, "appointment_id", None) == appointment_id
        ]


@dataclass
class FakeMailer:
    """Keeps what it was asked to send; `failures` are raised first, one per call."""

    sent: list[EmailMessage] = field(default_factory=list)
    attempts: list[EmailMessage] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)

    async def send(self, message: EmailMessage) -> None:
        self.attempts.append(message)
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(message)

    def to(self, appointment_id: uuid.UUID) -> list[EmailMessage]:
        return [message for message in self.sent if str(appointment_id) in message["Message-ID"]]


def _with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


@pytest.fixture(scope="session")
async def service_pool() -> AsyncIterator[asyncpg.Pool]:
    """A fresh database, migrated as its owner; the pool logs in as the service role."""
    admin_dsn = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
    database = f"visio_notif_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{database}"')
    owner_dsn = _with_database(admin_dsn, database)
    try:
        applied = await migrate(owner_dsn, SCHEMA, service_password="visio_notifications")
        assert applied == ["001_init.sql"]
        assert await migrate(owner_dsn, SCHEMA, service_password="visio_notifications") == []
        pool = await create_pool(
            role_dsn(owner_dsn, SCHEMA.service_role, "visio_notifications"), SCHEMA.schema
        )
        try:
            assert await pool.fetchval("SELECT current_user") == "visio_notifications"
            yield pool
        finally:
            await pool.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def mailer() -> FakeMailer:
    return FakeMailer()


@pytest.fixture
def deps(
    service_pool: asyncpg.Pool,
    publisher: FakePublisher,
    mailer: FakeMailer,
    settings: NotificationsSettings,
) -> Deps:
    return Deps(
        pool=service_pool,
        publisher=publisher,
        settings=settings,
        topics=Topics(settings.topic_prefix),
        send_mail=mailer.send,
    )


async def wait_for(
    condition: Callable[[], Awaitable[bool] | bool], within_s: float = 10.0, interval: float = 0.05
) -> None:
    """Poll a condition until it holds or the deadline passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(interval)


# Test modules are imported with --import-mode=importlib and cannot import this file: the
# helpers reach them as fixtures.


@pytest.fixture
def new_appointment() -> Callable[..., AppointmentRequested]:
    return make_appointment


@pytest.fixture
def new_meeting() -> Callable[..., MeetingReady]:
    return make_meeting


@pytest.fixture
def until() -> Callable[..., Awaitable[None]]:
    return wait_for
