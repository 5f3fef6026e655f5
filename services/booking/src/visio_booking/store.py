"""Booking's tables, in plain SQL: appointments, their history, the outbox."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
from visio_runtime.db import SchemaSpec
from visio_shared import AppointmentRequested, Envelope, Headers
from visio_shared.headers import event_key

SCHEMA = SchemaSpec(schema="booking", sql_dir=Path(__file__).parent / "migrations")

# Later steps of an appointment's life never move it back to an earlier one.
STATUS_RANK = {
    "requested": 0,
    "meeting_ready": 1,
    "meeting_failed": 2,
    "notification_failed": 3,
    "confirmed": 4,
    "cancelled": 5,
    "held": 6,
    "no_show": 6,
}


async def insert_appointment(conn: asyncpg.Connection, event: AppointmentRequested) -> None:
    await conn.execute(
        """
        INSERT INTO appointments (
            appointment_id, correlation_id, revision, status, caf_code, advisor_id, advisor_name,
            start_at, duration_minutes, timezone, subject, first_name, last_name, email, device,
            cgu_version, cgu_accepted_at, recording_authorised, calling_system)
        VALUES ($1, $2, $3, 'requested', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                $15, $16, $17, $18)
        """,
        event.appointment_id,
        event.correlation_id,
        event.revision,
        event.caf_code,
        event.advisor.id,
        event.advisor.display_name,
        event.start,
        event.duration_minutes,
        event.timezone,
        event.subject,
        event.user.first_name,
        event.user.last_name,
        str(event.user.email),
        event.user.device.value,
        event.consent.cgu_version,
        event.consent.accepted_at,
        event.consent.recording_authorised,
        event.calling_system,
    )
    await add_history(conn, event.appointment_id, "requested", event.revision, None, event.event_id)


async def add_history(
    conn: asyncpg.Connection,
    appointment_id: uuid.UUID,
    status: str,
    revision: int,
    detail: str | None,
    source_event_id: uuid.UUID | None,
) -> None:
    await conn.execute(
        "INSERT INTO appointment_history "
        "(appointment_id, status, revision, detail, source_event_id) VALUES ($1, $2, $3, $4, $5)",
        appointment_id,
        status,
        revision,
        detail,
        source_event_id,
    )


async def enqueue(conn: asyncpg.Connection, topic: str, event: Envelope) -> None:
    """Write the event to the outbox, in the caller's transaction; the relay publishes it."""
    await conn.execute(
        "INSERT INTO outbox (event_id, topic, key, payload, headers) VALUES ($1, $2, $3, $4, $5)",
        event.event_id,
        topic,
        event_key(event).decode(),
        event.model_dump_json(),
        json.dumps(Headers.for_event(event)),
    )


async def move_status(
    conn: asyncpg.Connection,
    appointment_id: uuid.UUID,
    revision: int,
    status: str,
    *,
    detail: str | None = None,
    join_url: str | None = None,
    source_event_id: uuid.UUID | None = None,
) -> bool:
    """Move the appointment forward to `status` if the event speaks of its current revision and
    the step is a later one; always keep the event in the history. True if the status moved."""
    row = await conn.fetchrow(
        "SELECT status, revision FROM appointments WHERE appointment_id = $1 FOR UPDATE",
        appointment_id,
    )
    if row is None:
        return False
    await add_history(conn, appointment_id, status, revision, detail, source_event_id)
    if join_url is not None and revision == row["revision"]:
        await conn.execute(
            "UPDATE appointments SET join_url = $2, updated_at = now() WHERE appointment_id = $1",
            appointment_id,
            join_url,
        )
    if revision != row["revision"] or STATUS_RANK[status] <= STATUS_RANK[row["status"]]:
        return False
    await conn.execute(
        "UPDATE appointments SET status = $2, status_reason = $3, updated_at = now() "
        "WHERE appointment_id = $1",
        appointment_id,
        status,
        detail,
    )
    return True


async def fetch_appointment(pool: asyncpg.Pool, appointment_id: uuid.UUID) -> dict[str, Any] | None:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT * FROM appointments WHERE appointment_id = $1", appointment_id
        )
        if row is None:
            return None
        history = await conn.fetch(
            "SELECT status, revision, at, detail FROM appointment_history "
            "WHERE appointment_id = $1 ORDER BY id",
            appointment_id,
        )
    appointment = dict(row)
    appointment["end_at"] = row["start_at"] + timedelta(minutes=row["duration_minutes"])
    appointment["history"] = [dict(entry) for entry in history]
    return appointment
