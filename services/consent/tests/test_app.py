"""The service around the handler: consumer routing and dead letters, the verify endpoint, the
verify command. The broker is replaced by a recording fake; PostgreSQL is real."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import pytest
from aiokafka.structs import ConsumerRecord
from pydantic import SecretStr
from visio_consent.app import create_app
from visio_consent.cli import verify_main
from visio_consent.handlers import record_consent
from visio_consent.ledger import append
from visio_consent.settings import ConsentSettings
from visio_shared import AppointmentRequested, ConsentRecorded, Headers, Topics

if TYPE_CHECKING:
    from conftest import Database, FakePublisher

MakeEvent = Callable[..., AppointmentRequested]


def settings_for(database: Database) -> ConsentSettings:
    return ConsentSettings(
        database_url=SecretStr(database.service_dsn),
        subject_key=SecretStr("test-subject-key"),
        topic_prefix="visio-rdv-test",
    )


def as_record(event: AppointmentRequested, offset: int = 0) -> ConsumerRecord[Any, Any]:
    value = event.to_json_bytes()
    return ConsumerRecord(
        topic="visio-rdv-test.appointments.v1",
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=str(event.appointment_id).encode(),
        value=value,
        checksum=None,
        serialized_key_size=36,
        serialized_value_size=len(value),
        headers=[(name, value.encode()) for name, value in Headers.for_event(event).items()],
    )


def test_create_app_does_no_io() -> None:
    # Nothing listens on these addresses: building the app must not try to reach them.
    app = create_app(
        ConsentSettings(
            database_url=SecretStr("postgresql://nobody@127.0.0.1:1/none"),
            kafka_bootstrap_servers="127.0.0.1:1",
        )
    )
    paths = {getattr(route, "path", None) for route in app.routes}
    assert {"/v1/ledger/verify", "/health/live", "/health/ready", "/metrics"} <= paths
    assert ConsentSettings().http_port == 8083


async def test_consumer_records_consent_and_dead_letters_poison(
    database: Database,
    pool: asyncpg.Pool,
    publisher: FakePublisher,
    make_event: MakeEvent,
) -> None:
    app = create_app(settings_for(database))
    runtime = app.state.runtime
    runtime.pool = pool
    runtime.broker = runtime.consumer.broker = publisher

    good = make_event()
    assert await runtime.consumer.process(as_record(good)) == "handled"
    bad = make_event(cgu_sha256="0" * 64)
    assert await runtime.consumer.process(as_record(bad, offset=1)) == "dead_lettered"

    assert await pool.fetchval("SELECT count(*) FROM ledger") == 2
    consents, dead = publisher.calls
    assert consents.topic == "visio-rdv-test.consents.v1"
    assert ConsentRecorded.model_validate_json(consents.message).causation_id == good.event_id
    assert dead.topic == "visio-rdv-test.consent.dlq"
    assert dead.message == bad.to_json_bytes()
    assert dead.headers[Headers.DLQ_ERROR_CLASS] == "Poison"
    assert "is not the digest of CGU version 1" in dead.headers[Headers.DLQ_REASON]
    assert dead.headers[Headers.DLQ_SOURCE_OFFSET] == "1"


async def test_verify_endpoint(database: Database, pool: asyncpg.Pool) -> None:
    app = create_app(settings_for(database))
    app.state.runtime.pool = pool
    async with pool.acquire() as conn:
        entries = await append(
            conn,
            [
                {
                    "kind": "cgu_accepted",
                    "appointment_id": str(uuid.uuid4()),
                    "source_event_id": str(uuid.uuid4()),
                }
                for _ in range(3)
            ],
        )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://consent") as client:
        response = await client.get("/v1/ledger/verify")
    assert response.status_code == 200
    assert response.json() == {
        "ok": True,
        "count": 3,
        "head_seq": 3,
        "head_hash": entries[-1].hash,
        "broken_seq": None,
        "reason": None,
        "expected": None,
        "stored": None,
    }


async def test_verify_command_exit_status(
    database: Database,
    pool: asyncpg.Pool,
    superuser: asyncpg.Connection,
    publisher: FakePublisher,
    make_event: MakeEvent,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = settings_for(database)
    await record_consent(make_event(), pool, publisher, settings, Topics(settings.topic_prefix))

    assert await asyncio.to_thread(verify_main, ["--dsn", database.service_dsn]) == 0
    assert "ledger ok: 2 records" in capsys.readouterr().out

    await superuser.execute("ALTER TABLE ledger DISABLE TRIGGER ledger_append_only")
    await superuser.execute(
        "UPDATE ledger SET payload = payload || '{\"revision\": 2}' WHERE seq = 2"
    )
    await superuser.execute("ALTER TABLE ledger ENABLE TRIGGER ledger_append_only")

    assert await asyncio.to_thread(verify_main, ["--dsn", database.service_dsn, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["ok"], report["broken_seq"], report["count"]) == (False, 2, 1)

    missing = database.service_dsn.rsplit("/", 1)[0] + "/no_such_database"
    assert await asyncio.to_thread(verify_main, ["--dsn", missing]) == 2
    assert "cannot read the consent ledger" in capsys.readouterr().err
