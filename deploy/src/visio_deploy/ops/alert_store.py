"""The alerts' tables (schema `alerts`): a copy of each appointment as far as alerts need it,
and one row per (appointment, cause) — inserted once, sent once."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg
from visio_runtime.db import SchemaSpec
from visio_shared import AdvisorReassigned, AppointmentRequested, AppointmentRescheduled

SCHEMA = SchemaSpec(schema="alerts", sql_dir=Path(__file__).parent / "migrations")


async def keep_appointment(conn: asyncpg.Connection, event: AppointmentRequested) -> None:
    await conn.execute(
        """
        INSERT INTO appointments (appointment_id, revision, caf_code, advisor_id, advisor_name,
                                  start_at, timezone, requested_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT (appointment_id) DO NOTHING
        """,
        event.appointment_id,
        event.revision,
        event.caf_code,
        event.advisor.id,
        event.advisor.display_name,
        event.start,
        event.timezone,
        event.occurred_at,
    )


async def follow_change(
    conn: asyncpg.Connection, event: AppointmentRescheduled | AdvisorReassigned
) -> None:
    """A newer revision's time or advisor; an older one (redelivered late) changes nothing."""
    if isinstance(event, AppointmentRescheduled):
        sql = "start_at = $3, timezone = $4"
        values: tuple[object, ...] = (event.start, event.timezone)
    else:
        sql = "advisor_id = $3, advisor_name = $4"
        values = (event.advisor.id, event.advisor.display_name)
    await conn.execute(
        f"UPDATE appointments SET revision = $2, {sql}, updated_at = now() "
        "WHERE appointment_id = $1 AND revision < $2",
        event.appointment_id,
        event.revision,
        *values,
    )


async def mark(conn: asyncpg.Connection, appointment_id: uuid.UUID, column: str) -> None:
    assert column in ("confirmed_at", "cancelled_at")
    await conn.execute(
        f"UPDATE appointments SET {column} = coalesce({column}, now()), updated_at = now() "
        "WHERE appointment_id = $1",
        appointment_id,
    )


async def record_alert(
    conn: asyncpg.Connection,
    appointment_id: uuid.UUID,
    cause: str,
    reason: str,
    detail: str,
    source_event_id: uuid.UUID | None,
) -> None:
    await conn.execute(
        """
        INSERT INTO alerts (appointment_id, cause, reason, detail, source_event_id)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (appointment_id, cause) DO NOTHING
        """,
        appointment_id,
        cause,
        reason,
        detail,
        source_event_id,
    )


async def record_stuck(conn: asyncpg.Connection, after_minutes: float) -> int:
    """An alert for each appointment neither confirmed nor cancelled after the threshold, and
    not already reported as failed (the failure said it better)."""
    status: str = await conn.execute(
        """
        INSERT INTO alerts (appointment_id, cause, reason, detail)
        SELECT a.appointment_id, 'stuck', 'not_confirmed',
               'no confirmation email ' || $1::float8 || ' minutes after booking'
        FROM appointments a
        WHERE a.confirmed_at IS NULL AND a.cancelled_at IS NULL
          AND a.requested_at < now() - $1::float8 * interval '1 minute'
          AND NOT EXISTS (SELECT 1 FROM alerts f WHERE f.appointment_id = a.appointment_id)
        ON CONFLICT (appointment_id, cause) DO NOTHING
        """,
        after_minutes,
    )
    return int(status.split()[-1])


@dataclass(frozen=True)
class PendingAlert:
    appointment_id: uuid.UUID
    cause: str
    reason: str
    detail: str
    # From the appointment's copy; None when the copy never came (sent anyway, after a while).
    caf_code: str | None
    advisor_id: str | None
    advisor_name: str | None
    start_at: datetime | None
    timezone: str | None


async def lock_next(
    conn: asyncpg.Connection, appointment_id: uuid.UUID | None, orphan_after_minutes: float
) -> PendingAlert | None:
    """The oldest unsent alert whose appointment is known — or unknown for too long — locked
    until the caller's transaction ends, so two senders never send the same one."""
    row = await conn.fetchrow(
        """
        SELECT al.appointment_id, al.cause, al.reason, al.detail, ap.caf_code, ap.advisor_id,
               ap.advisor_name, ap.start_at, ap.timezone
        FROM alerts al LEFT JOIN appointments ap USING (appointment_id)
        WHERE al.sent_at IS NULL
          AND ($1::uuid IS NULL OR al.appointment_id = $1)
          AND (ap.appointment_id IS NOT NULL
               OR al.recorded_at < now() - $2::float8 * interval '1 minute')
        ORDER BY al.recorded_at
        LIMIT 1
        FOR UPDATE OF al SKIP LOCKED
        """,
        appointment_id,
        orphan_after_minutes,
    )
    return PendingAlert(**dict(row)) if row else None


async def mark_sent(conn: asyncpg.Connection, alert: PendingAlert, recipient: str) -> None:
    await conn.execute(
        "UPDATE alerts SET sent_at = now(), recipient = $3, start_at = $4 "
        "WHERE appointment_id = $1 AND cause = $2",
        alert.appointment_id,
        alert.cause,
        recipient,
        alert.start_at,
    )
