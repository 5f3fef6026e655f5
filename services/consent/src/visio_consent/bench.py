"""How fast the ledger appends, measured on a scratch database (never the real ledger: its
records could not be removed afterwards)."""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from visio_shared import CGU_VERSIONS

from visio_consent.ledger import SCHEMA, append, iso_utc, subject_ref
from visio_consent.verify import VerifyReport, verify


@dataclass(frozen=True)
class BenchResult:
    records: int
    batch: int
    append_s: float
    verify_s: float
    report: VerifyReport

    def describe(self) -> str:
        rate = self.records / self.append_s
        return (
            f"consent bench: {self.records} records appended in {self.append_s:.2f} s — "
            f"{rate:.0f} appends/s (batches of {self.batch} records: one transaction and one "
            f"INSERT per batch)\n"
            f"verified in {self.verify_s:.2f} s ({self.records / self.verify_s:.0f} records/s): "
            f"{self.report.describe().splitlines()[0]}"
        )


async def run_bench(owner_dsn: str, records: int, batch: int) -> BenchResult:
    """Create a scratch database, install the ledger in it, append `records` records in
    batches of `batch`, verify them, drop the database."""
    name = f"visio_consent_bench_{secrets.token_hex(5)}"
    admin = await asyncpg.connect(owner_dsn)
    created_roles: list[str] = []
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        conn = await asyncpg.connect(
            _on_database(owner_dsn, name), server_settings={"search_path": SCHEMA.schema}
        )
        try:
            created_roles = await _install(conn)
            sample = _records(records)
            started = time.perf_counter()
            for start in range(0, records, batch):
                await append(conn, sample[start : start + batch], batch_size=batch)
            append_s = time.perf_counter() - started
            started = time.perf_counter()
            report = await verify(conn)
            verify_s = time.perf_counter() - started
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for role in created_roles:
            await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()
    return BenchResult(records, batch, append_s, verify_s, report)


async def _install(conn: asyncpg.Connection) -> list[str]:
    """The ledger's migrations, applied here rather than through visio_runtime.db.migrate:
    migrate sets the service role's password, which is cluster-wide, and the bench must not
    touch the running service's credentials. Returns the roles it had to create."""
    created = []
    for role in (SCHEMA.owner_role, SCHEMA.service_role):
        if not await conn.fetchval("SELECT true FROM pg_roles WHERE rolname = $1", role):
            await conn.execute(f'CREATE ROLE "{role}" NOLOGIN')
            created.append(role)
    await conn.execute(f'GRANT "{SCHEMA.owner_role}" TO CURRENT_USER')
    await conn.execute(f'CREATE SCHEMA "{SCHEMA.schema}" AUTHORIZATION "{SCHEMA.owner_role}"')
    for path in sorted(SCHEMA.sql_dir.glob("*.sql")):
        async with conn.transaction():
            await conn.execute(f'SET LOCAL ROLE "{SCHEMA.owner_role}"')
            await conn.execute(f'SET LOCAL search_path = "{SCHEMA.schema}"')
            await conn.execute(path.read_text(encoding="utf-8"))
    return created


def _records(count: int) -> list[dict[str, Any]]:
    """Records shaped like the ones an appointment request appends."""
    accepted_at = iso_utc(datetime.now(UTC))
    cgu = CGU_VERSIONS["1"]
    records = []
    for number in range(count):
        kind = "cgu_accepted" if number % 2 == 0 else "recording_authorised"
        record: dict[str, Any] = {
            "kind": kind,
            "subject_ref": subject_ref("bench", f"person-{number // 2}@example.org"),
            "appointment_id": str(uuid.uuid4()),
            "revision": 1,
            "source_event_id": str(uuid.uuid4()),
            "cgu_version": cgu.version,
            "channel": "api",
            "calling_system": "bench",
        }
        if kind == "cgu_accepted":
            record |= {"cgu_sha256": cgu.sha256, "accepted_at": accepted_at}
        else:
            record["decided_at"] = accepted_at
        records.append(record)
    return records


def _on_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))
