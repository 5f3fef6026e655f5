"""Fixtures: a throwaway PostgreSQL database per test, migrated, with pools on the service role,
events to feed the handler, and a publisher that records what it is asked to publish."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from visio_consent.ledger import SCHEMA
from visio_runtime.db import create_pool, migrate, role_dsn
from visio_shared import (
    CGU_VERSIONS,
    Advisor,
    AppointmentRequested,
    ConsentGiven,
    Device,
    Person,
)

ADMIN_DSN = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SERVICE_PASSWORD = "visio_consent"


def _on_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


@dataclass(frozen=True)
class Database:
    name: str
    owner_dsn: str  # the migrating login (a superuser here)
    service_dsn: str  # the service's restricted role
    service_password: str


@pytest.fixture
async def database() -> AsyncIterator[Database]:
    name = f"visio_consent_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        owner_dsn = _on_database(ADMIN_DSN, name)
        await migrate(owner_dsn, SCHEMA, service_password=SERVICE_PASSWORD)
        yield Database(
            name=name,
            owner_dsn=owner_dsn,
            service_dsn=role_dsn(owner_dsn, SCHEMA.service_role, SERVICE_PASSWORD),
            service_password=SERVICE_PASSWORD,
        )
    finally:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def pool(database: Database) -> AsyncIterator[asyncpg.Pool]:
    """Connections as the service role `visio_consent`, search_path = consent."""
    service_pool = await create_pool(database.service_dsn, schema=SCHEMA.schema, max_size=25)
    yield service_pool
    await service_pool.close()


@pytest.fixture
async def superuser(database: Database) -> AsyncIterator[asyncpg.Connection]:
    """A superuser connection on the test database, search_path = consent."""
    conn = await asyncpg.connect(database.owner_dsn, server_settings={"search_path": SCHEMA.schema})
    yield conn
    await conn.close()


EMAIL = "Amelie.Poulain@Example.org"
FIRST_NAME = "Amélie"
LAST_NAME = "Poulain-Lefebvre"


@pytest.fixture
def make_event() -> Callable[..., AppointmentRequested]:
    def make(
        *,
        email: str = EMAIL,
        recording_authorised: bool = True,
        cgu_version: str = "1",
        cgu_sha256: str | None = None,
        **overrides: Any,
    ) -> AppointmentRequested:
        accepted_at = datetime(2025, 3, 1, 9, 15, tzinfo=UTC)
        fields: dict[str, Any] = {
            "correlation_id": uuid.uuid4(),
            "appointment_id": uuid.uuid4(),
            "revision": 1,
            "caf_code": "974",
            "advisor": Advisor(id="0f8e7d6c-advisor", display_name="Claire Martin"),
            "start": accepted_at + timedelta(days=7),
            "duration_minutes": 30,
            "timezone": "Indian/Reunion",
            "subject": "Prime d'activité",
            "user": Person(
                first_name=FIRST_NAME, last_name=LAST_NAME, email=email, device=Device.SMARTPHONE
            ),
            "consent": ConsentGiven(
                cgu_version=cgu_version,
                cgu_sha256=cgu_sha256 or CGU_VERSIONS["1"].sha256,
                accepted_at=accepted_at,
                recording_authorised=recording_authorised,
                channel="api",
            ),
            "calling_system": "caf.fr",
        }
        fields.update(overrides)
        return AppointmentRequested(**fields)

    return make


@dataclass(frozen=True)
class Published:
    message: Any
    topic: str
    key: bytes | None
    headers: dict[str, str] | None


class FakePublisher:
    """Stands in for the Kafka broker: records every publish."""

    def __init__(self) -> None:
        self.calls: list[Published] = []

    async def publish(
        self,
        message: Any,
        topic: str,
        *,
        key: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.calls.append(Published(message, topic, key, headers))


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()
