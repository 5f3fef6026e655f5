"""Notifications' tables (schema `notifications`) and the plain SQL that reads and writes them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg
from visio_runtime.db import SchemaSpec
from visio_shared import AppointmentRequested, Envelope, MeetingReady

SCHEMA = SchemaSpec(schema="notifications", sql_dir=Path(__file__).parent / "migrations")

# First key of the two-int advisory locks taken per appointment ("NOTI"): a key space of its
# own, apart from the migrations' single-bigint locks.
_LOCK_CLASS = 0x4E4F5449


async def lock_appointment(conn: asyncpg.Connection, appointment_id: uuid.UUID) -> None:
    """Serialise, until the transaction ends, everything done for one appointment: its two
    halves may arrive at the same time on two consumers."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1::int, hashtext($2::text))",
        _LOCK_CLASS,
        str(appointment_id),
    )


async def save_appointment(conn: asyncpg.Connection, event: AppointmentRequested) -> bool:
    """Keep the latest revision; False if an equal or later one is already here."""
    status: str = await conn.execute(
        """
        INSERT INTO appointments
            (appointment_id, revision, start_at, payload, correlation_id, event_id)
        VALUES ($1, $2, $3, $4::jsonb, $5, $6)
        ON CONFLICT (appointment_id) DO UPDATE SET
            revision = EXCLUDED.revision,
            start_at = EXCLUDED.start_at,
            payload = EXCLUDED.payload,
            correlation_id = EXCLUDED.correlation_id,
            event_id = EXCLUDED.event_id,
            updated_at = now()
        WHERE appointments.revision < EXCLUDED.revision
        """,
        event.appointment_id,
        event.revision,
        event.start,
        event.model_dump_json(),
        event.correlation_id,
        event.event_id,
    )
    return status.endswith(" 1")


async def save_meeting(conn: asyncpg.Connection, event: MeetingReady) -> bool:
    """Keep the latest revision; False if an equal or later one is already here."""
    status: str = await conn.execute(
        """
        INSERT INTO meetings (appointment_id, revision, join_url, payload, event_id)
        VALUES ($1, $2, $3, $4::jsonb, $5)
        ON CONFLICT (appointment_id) DO UPDATE SET
            revision = EXCLUDED.revision,
            join_url = EXCLUDED.join_url,
            payload = EXCLUDED.payload,
            event_id = EXCLUDED.event_id,
            updated_at = now()
        WHERE meetings.revision < EXCLUDED.revision
        """,
        event.appointment_id,
        event.revision,
        event.join_url,
        event.model_dump_json(),
        event.event_id,
    )
    return status.endswith(" 1")


async def load_appointment(
    conn: asyncpg.Connection, appointment_id: uuid.UUID
) -> AppointmentRequested | None:
    payload = await conn.fetchval(
        "SELECT payload::text FROM appointments WHERE appointment_id = $1", appointment_id
    )
    return None if payload is None else AppointmentRequested.model_validate_json(payload)


async def load_meeting(conn: asyncpg.Connection, appointment_id: uuid.UUID) -> MeetingReady | None:
    payload = await conn.fetchval(
        "SELECT payload::text FROM meetings WHERE appointment_id = $1", appointment_id
    )
    return None if payload is None else MeetingReady.model_validate_json(payload)


async def confirmation_settled(
    conn: asyncpg.Connection, appointment_id: uuid.UUID, revision: int
) -> bool:
    """A confirmation went out (at any revision: later changes are updates, not confirmations),
    or this revision's confirmation already failed for good."""
    settled: bool = await conn.fetchval(
        """
        SELECT EXISTS (
            SELECT 1 FROM dispatches
            WHERE appointment_id = $1 AND kind = 'confirmation'
              AND (status = 'sent' OR revision = $2)
        )
        """,
        appointment_id,
        revision,
    )
    return settled


@dataclass(frozen=True)
class Dispatch:
    """One email decided: sent, or failed for good, with the event that says so."""

    appointment_id: uuid.UUID
    revision: int
    kind: str
    message_id: str
    recipient_sha256: str
    status: str  # 'sent' | 'failed'
    event: Envelope
    reason: str | None = None
    detail: str = ""
    sent_at: datetime | None = None


async def record_dispatch(conn: asyncpg.Connection, dispatch: Dispatch) -> None:
    await conn.execute(
        """
        INSERT INTO dispatches (appointment_id, revision, kind, message_id, recipient_sha256,
                                status, reason, detail, sent_at, event)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb)
        """,
        dispatch.appointment_id,
        dispatch.revision,
        dispatch.kind,
        dispatch.message_id,
        dispatch.recipient_sha256,
        dispatch.status,
        dispatch.reason,
        dispatch.detail,
        dispatch.sent_at,
        dispatch.event.model_dump_json(),
    )


async def claim_unpublished(
    conn: asyncpg.Connection, appointment_id: uuid.UUID | None = None
) -> tuple[int, str] | None:
    """(dispatch id, event JSON) of the oldest outcome Kafka does not have yet, locked until the
    caller's transaction ends; one another transaction holds is skipped, never sent twice."""
    row = await conn.fetchrow(
        """
        SELECT id, event::text AS event FROM dispatches
        WHERE published_at IS NULL AND ($1::uuid IS NULL OR appointment_id = $1)
        ORDER BY id
        LIMIT 1
        FOR UPDATE SKIP LOCKED
        """,
        appointment_id,
    )
    return None if row is None else (row["id"], row["event"])


async def mark_published(conn: asyncpg.Connection, dispatch_id: int) -> None:
    await conn.execute("UPDATE dispatches SET published_at = now() WHERE id = $1", dispatch_id)
