"""Reminders, scheduled in PostgreSQL: one row per (appointment, offset before the start).

They follow the appointment's state: scheduled from the start time the person was last told,
moved when a reschedule is announced, dropped when the appointment is cancelled or its meeting
fails. A row is claimed with FOR UPDATE SKIP LOCKED, so several replicas share the due ones and
a restart loses none (an unsent row simply stays pending).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from visio_shared import AppointmentRequested

from visio_notifications.decide import State


@dataclass(frozen=True)
class DueReminder:
    appointment_id: uuid.UUID
    offset_minutes: int
    revision: int
    start_at: datetime
    attempts: int
    last_error: str


async def sync(conn: asyncpg.Connection, state: State, offsets: list[int], now: datetime) -> None:
    """Bring the appointment's reminders in line with its state."""
    await sync_many(conn, [state], offsets, now)


async def sync_many(
    conn: asyncpg.Connection, states: Sequence[State], offsets: list[int], now: datetime
) -> None:
    """Bring each appointment's reminders in line with its state: two round trips at most for
    them all (the cancelled ones in one statement, the others pipelined)."""
    stale: list[uuid.UUID] = []  # not up to date: their pending reminders are dropped
    wanted: list[tuple[Any, ...]] = []
    for state in states:
        appointment = state.appointment
        if appointment is None:
            continue
        if state.up_to_date():
            wanted.append(_wanted(appointment, offsets, now))
        else:
            stale.append(appointment.appointment_id)
    if stale:
        await conn.execute(
            "UPDATE reminders SET status = 'cancelled', updated_at = now() "
            "WHERE appointment_id = ANY($1::uuid[]) AND status = 'pending'",
            stale,
        )
    if wanted:
        await conn.executemany(_SYNC, wanted)


def _wanted(
    appointment: AppointmentRequested, offsets: list[int], now: datetime
) -> tuple[Any, ...]:
    due_ats = [appointment.start - timedelta(minutes=offset) for offset in offsets]
    # None in the past: an appointment booked 3 hours ahead gets no 48-hour reminder.
    statuses = ["pending" if due_at > now else "skipped" for due_at in due_ats]
    return (
        appointment.appointment_id,
        offsets,
        appointment.revision,
        appointment.start,
        due_ats,
        statuses,
    )


# One appointment's statement: each configured reminder untouched while the start is the
# same (a sent reminder stays sent), made a new reminder under the new revision by a new
# start; and the pending ones of offsets no longer configured dropped (other rows than the
# insert's).
# The appointment's rows are found by their key alone (`mine`): with `status = 'pending'`
# in the same scan, the planner may take the index of every pending reminder (the poller's,
# `reminders_due`) and read them all — it did, 100 pages a sync in the bench, growing with
# the appointments ahead.
_SYNC = """
WITH mine AS MATERIALIZED (
    SELECT offset_minutes, status FROM reminders WHERE appointment_id = $1
), dropped AS (
    UPDATE reminders r SET status = 'cancelled', updated_at = now()
    FROM mine
    WHERE r.appointment_id = $1 AND r.offset_minutes = mine.offset_minutes
      AND mine.status = 'pending' AND NOT (mine.offset_minutes = ANY($2::integer[]))
)
INSERT INTO reminders (appointment_id, offset_minutes, revision, start_at, due_at,
                       status)
SELECT $1, wanted.offset_minutes, $3, $4, wanted.due_at, wanted.status
FROM unnest($2::integer[], $5::timestamptz[], $6::text[])
     AS wanted (offset_minutes, due_at, status)
ON CONFLICT (appointment_id, offset_minutes) DO UPDATE SET
    revision = EXCLUDED.revision, start_at = EXCLUDED.start_at,
    due_at = EXCLUDED.due_at, status = EXCLUDED.status, attempts = 0,
    retry_at = NULL, last_error = NULL, updated_at = now()
WHERE reminders.start_at <> EXCLUDED.start_at OR reminders.status = 'cancelled'
"""


async def claim_due(
    conn: asyncpg.Connection, now: datetime, passed: list[uuid.UUID]
) -> DueReminder | None:
    """The most overdue reminder, row-locked until the caller's transaction ends; one another
    replica holds is skipped. `passed`: appointments this round could not lock."""
    row = await conn.fetchrow(
        """
        SELECT appointment_id, offset_minutes, revision, start_at, attempts,
               COALESCE(last_error, '') AS last_error
        FROM reminders
        WHERE status = 'pending' AND due_at <= $1 AND (retry_at IS NULL OR retry_at <= $1)
          AND NOT (appointment_id = ANY($2::uuid[]))
        ORDER BY due_at
        LIMIT 1
        FOR UPDATE SKIP LOCKED
        """,
        now,
        passed,
    )
    return None if row is None else DueReminder(**dict(row))


async def superseded(conn: asyncpg.Connection, reminder: DueReminder, now: datetime) -> bool:
    """A closer reminder is due too (the service was down, say): only that one goes out."""
    closer: bool = await conn.fetchval(
        """
        SELECT EXISTS (
            SELECT 1 FROM reminders
            WHERE appointment_id = $1 AND status = 'pending' AND offset_minutes < $2
              AND due_at <= $3
        )
        """,
        reminder.appointment_id,
        reminder.offset_minutes,
        now,
    )
    return closer


async def finish(
    conn: asyncpg.Connection, reminder: DueReminder, status: str, error: str | None = None
) -> None:
    await conn.execute(
        "UPDATE reminders SET status = $3, last_error = COALESCE($4, last_error), "
        "updated_at = now() WHERE appointment_id = $1 AND offset_minutes = $2",
        reminder.appointment_id,
        reminder.offset_minutes,
        status,
        error,
    )


async def postpone(
    conn: asyncpg.Connection, reminder: DueReminder, until: datetime, error: str
) -> None:
    await conn.execute(
        "UPDATE reminders SET retry_at = $3, attempts = attempts + 1, last_error = $4, "
        "updated_at = now() WHERE appointment_id = $1 AND offset_minutes = $2",
        reminder.appointment_id,
        reminder.offset_minutes,
        until,
        error,
    )
