"""Fixtures: a throwaway PostgreSQL database per test, migrated, with pools on the service role,
events to feed the handler, a publisher that records what it is asked to publish, settings with
a fixed checkpoint key, and a forger: a database superuser rewriting history."""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from faststream.kafka import KafkaBroker
from pydantic import SecretStr
from visio_consent.ledger import SCHEMA, record_hash
from visio_consent.settings import ConsentSettings
from visio_consent.signing import SigningKey
from visio_runtime.db import create_pool, migrate, role_dsn
from visio_runtime.kafka import ensure_topics, make_broker
from visio_runtime.testing import RecordingPublisher
from visio_shared import (
    CGU_VERSIONS,
    Advisor,
    AppointmentRequested,
    ConsentGiven,
    Device,
    Person,
    Topics,
)
from visio_testing import create_database, drop_database

SERVICE_PASSWORD = "visio_consent"


@dataclass(frozen=True)
class Database:
    name: str
    owner_dsn: str  # the migrating login (a superuser here)
    service_dsn: str  # the service's restricted role
    service_password: str


@pytest.fixture
async def database(postgres_url: str) -> AsyncIterator[Database]:
    """A fresh database on the server the root conftest chose, migrated as its owner."""
    owner_dsn = await create_database(postgres_url, prefix="visio_consent_test")
    try:
        await migrate(owner_dsn, SCHEMA, service_password=SERVICE_PASSWORD)
        yield Database(
            name=urlsplit(owner_dsn).path.lstrip("/"),
            owner_dsn=owner_dsn,
            service_dsn=role_dsn(owner_dsn, SCHEMA.service_role, SERVICE_PASSWORD),
            service_password=SERVICE_PASSWORD,
        )
    finally:
        await drop_database(postgres_url, owner_dsn)


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
            "advisor": Advisor(
                id="0f8e7d6c-5b4a-4392-8170-6e5d4c3b2a19", display_name="Claire Martin"
            ),
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


# The runtime's recording publisher, under the name these tests use.
FakePublisher = RecordingPublisher


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


# A fixed Ed25519 seed, so every test signs with the same (test-only) key.
SIGNING_SEED = base64.b64encode(bytes(range(32))).decode()


@pytest.fixture
def signing_key() -> SigningKey:
    return SigningKey(Ed25519PrivateKey.from_private_bytes(base64.b64decode(SIGNING_SEED)), False)


@pytest.fixture
def settings(database: Database, tmp_path: Path) -> ConsentSettings:
    return ConsentSettings(
        database_url=SecretStr(database.service_dsn),
        subject_key=SecretStr("test-subject-key"),
        topic_prefix=f"consent-test-{secrets.token_hex(4)}",
        var_dir=tmp_path,
        checkpoint_signing_key=SecretStr(SIGNING_SEED),
    )


@pytest.fixture
def environment(
    monkeypatch: pytest.MonkeyPatch, settings: ConsentSettings, kafka_bootstrap: str
) -> ConsentSettings:
    """The test's settings as CONSENT_* variables, the checkpoint key left unset (dev key)."""
    monkeypatch.setenv("CONSENT_SUBJECT_KEY", settings.subject_key.get_secret_value())
    monkeypatch.setenv("CONSENT_VAR_DIR", str(settings.var_dir))
    monkeypatch.setenv("CONSENT_TOPIC_PREFIX", settings.topic_prefix)
    monkeypatch.setenv("CONSENT_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.delenv("CONSENT_CHECKPOINT_SIGNING_KEY", raising=False)
    monkeypatch.delenv("CONSENT_MAX_UNSIGNED_AGE_S", raising=False)
    return settings.model_copy(
        update={"checkpoint_signing_key": None, "kafka_bootstrap_servers": kafka_bootstrap}
    )


@pytest.fixture
async def broker(environment: ConsentSettings) -> AsyncIterator[KafkaBroker]:
    """A real publisher: ConsentRecorded lands on the consents topic, where verify reads it
    (and, in the restore tests, AppointmentRequested on the appointments topic, as booking's)."""
    topics = Topics(environment.topic_prefix)
    await ensure_topics(
        environment, [topics.consents, topics.consent_checkpoints, topics.appointments]
    )
    publisher = make_broker(environment, client_id="consent-verify-test")
    await publisher.start()
    yield publisher
    await publisher.stop()


def a_record(kind: str = "cgu_accepted", **extra: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "appointment_id": str(uuid.uuid4()),
        "source_event_id": str(uuid.uuid4()),
        "subject_ref": "ab" * 32,
        "channel": "api",
        **extra,
    }


@pytest.fixture
def make_record() -> Callable[..., dict[str, Any]]:
    return a_record


class Forger:
    """A database superuser rewriting history: the append-only trigger is off while they work."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def execute(self, statement: str, *args: Any) -> None:
        async with self.conn.transaction():
            await self.conn.execute("ALTER TABLE ledger DISABLE TRIGGER ledger_append_only")
            await self.conn.execute(statement, *args)
            await self.conn.execute("ALTER TABLE ledger ENABLE TRIGGER ledger_append_only")

    async def rewrite(self, seq: int, change: dict[str, Any], *, through_end: bool = True) -> None:
        """Change record `seq` and recompute its hash and, if `through_end`, every later
        record's prev_hash and hash and the chain head: a careful forger."""
        rows = await self.conn.fetch(
            "SELECT seq, prev_hash, payload FROM ledger WHERE seq >= $1 ORDER BY seq", seq
        )
        async with self.conn.transaction():
            await self.conn.execute("ALTER TABLE ledger DISABLE TRIGGER ledger_append_only")
            prev = rows[0]["prev_hash"]
            for row in rows if through_end else rows[:1]:
                payload = json.loads(row["payload"])
                if row["seq"] == seq:
                    payload.update(change)
                digest = record_hash(prev, payload)
                await self.conn.execute(
                    "UPDATE ledger SET prev_hash = $2, hash = $3, payload = $4::jsonb, kind = $5 "
                    "WHERE seq = $1",
                    row["seq"],
                    prev,
                    digest,
                    json.dumps(payload),
                    payload["kind"],
                )
                prev = digest
            if through_end:
                await self.conn.execute(
                    "UPDATE chain_head SET seq = $1, hash = $2", rows[-1]["seq"], prev
                )
            await self.conn.execute("ALTER TABLE ledger ENABLE TRIGGER ledger_append_only")

    async def swap(self, first: int, second: int) -> None:
        """Exchange the places of two records (seq is a primary key: through a free number)."""
        await self.execute(
            "UPDATE ledger SET seq = CASE seq WHEN $1 THEN $2 WHEN $2 THEN $1 END + 1000000 "
            "WHERE seq IN ($1, $2)",
            first,
            second,
        )
        await self.execute("UPDATE ledger SET seq = seq - 1000000 WHERE seq > 1000000")

    async def cut_tail(self, seq: int) -> None:
        """Remove records from `seq` on and rewind the head to the record before."""
        await self.execute("DELETE FROM ledger WHERE seq >= $1", seq)
        last = await self.conn.fetchrow("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1")
        head = (last["seq"], last["hash"]) if last else (0, "0" * 64)
        await self.conn.execute("UPDATE chain_head SET seq = $1, hash = $2", *head)

    async def reset(self) -> None:
        """An empty ledger again (between property-test examples)."""
        await self.execute("TRUNCATE ledger")
        await self.conn.execute("UPDATE chain_head SET seq = 0, hash = repeat('0', 64)")


@pytest.fixture
async def forger(superuser: asyncpg.Connection) -> Forger:
    return Forger(superuser)
