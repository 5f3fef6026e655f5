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

import asyncpg

from visio_notifications.decide import State


@dataclass(frozen=True)
class DueReminder:
    appointment_id: uuid.UUID
    offset_minutes: int
    revision: int
    start_at: datetime
    attempts: int
    last_error: str


@dataclass(frozen=True)
class Wanted:
    """The reminders one appointment's state calls for: none pending if it is not `up_to_date`,
    else one per offset (`rows`: offset, revision, start, due, status)."""

    appointment_id: uuid.UUID
    current: bool
    rows: tuple[tuple[int, int, datetime, datetime, str], ...] = ()


def wanted(state: State, offsets: list[int], now: datetime) -> Wanted | None:
    """What `sync` writes for this state; None for an appointment unknown here."""
    appointment = state.appointment
    if appointment is None:
        return None
    if not state.up_to_date():
        return Wanted(appointment.appointment_id, current=False)
    rows = []
    for offset in dict.fromkeys(offsets):  # one row each, even if configured twice
        due_at = appointment.start - timedelta(minutes=offset)
        # None in the past: an appointment booked 3 hours ahead gets no 48-hour reminder.
        status = "pending" if due_at > now else "skipped"
        rows.append((offset, appointment.revision, appointment.start, due_at, status))
    return Wanted(appointment.appointment_id, current=True, rows=tuple(rows))


async def sync(conn: asyncpg.Connection, wanted: Sequence[Wanted], offsets: list[int]) -> None:
    """Bring these appointments' reminders in line with their states, in two statements."""
    if not wanted:
        return
    # Pending ones go: all of an appointment not up to date, those of offsets no longer
    # configured of the others.
    await conn.execute(
        "UPDATE reminders SET status = 'cancelled', updated_at = now() "
        "WHERE status = 'pending' AND (appointment_id = ANY($1::uuid[]) "
        "OR (appointment_id = ANY($2::uuid[]) AND NOT (offset_minutes = ANY($3::int[]))))",
        [one.appointment_id for one in wanted if not one.current],
        [one.appointment_id for one in wanted if one.current],
        offsets,
    )
    rows = [(one.appointment_id, *row) for one in wanted for row in one.rows]
    if not rows:
        return
    # Untouched while the start is the same (a sent reminder stays sent); a new start makes it
    # a new reminder, under the new revision.
    await conn.execute(
        """
        INSERT INTO reminders (appointment_id, offset_minutes, revision, start_at, due_at, status)
        SELECT * FROM unnest($1::uuid[], $2::int[], $3::int[], $4::timestamptz[],
                             $5::timestamptz[], $6::text[])
        ON CONFLICT (appointment_id, offset_minutes) DO UPDATE SET
            revision = EXCLUDED.revision, start_at = EXCLUDED.start_at,
            due_at = EXCLUDED.due_at, status = EXCLUDED.status, attempts = 0,
            retry_at = NULL, last_error = NULL, updated_at = now()
        WHERE reminders.start_at <> EXCLUDED.start_at OR reminders.status = 'cancelled'
        """,
        *(list(column) for column in zip(*rows, strict=True)),
    )


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
