"""The meetings schema: one row per appointment's meeting, the events already handled, and the
events that arrived before their appointment.

Everything about one appointment happens under a PostgreSQL advisory lock held for the whole
handling, Graph calls included: two replicas (one reading appointments.v1, the other
consents.v1) then never act on one meeting at once, and an early event is either stored
before the appointment's handler looks for it, or finds the meeting made.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
from visio_runtime.db import SchemaSpec, mark_processed
from visio_runtime.locks import AppointmentLocks, lock_key, release_session_locks
from visio_shared import AppointmentEvent, parse_event

from visio_meetings.advisor_note import Visitor

SCHEMA = SchemaSpec(schema="meetings", sql_dir=Path(__file__).parent / "migrations")

# The per-appointment lock (`visio_runtime.locks`) in meetings' own key space ("mt"), so its
# locks never meet another service's in a shared database.
LOCKS = AppointmentLocks(space=0x6D74)

Status = str  # 'ready', 'failed' or 'cancelled'


@dataclass(frozen=True)
class Meeting:
    appointment_id: uuid.UUID
    revision: int
    advisor_id: str
    transaction_id: str  # the creation key of the current (or last tried) meeting
    status: Status
    failure_reason: str | None
    # The appointment as it stands, to make a new meeting on a change of advisor.
    subject: str | None
    start_at: datetime | None
    duration_minutes: int | None
    timezone: str | None
    recording_authorised: bool
    # Graph's side.
    graph_event_id: str | None
    online_meeting_id: str | None
    join_url: str | None
    join_meeting_id: str | None
    passcode: str | None
    conference_id: str | None
    dial_in_url: str | None
    # Who is coming and how (migration 005), for the event's body; erasure empties them.
    first_name: str | None = None
    last_initial: str | None = None
    device: str | None = None

    @property
    def visitor(self) -> Visitor | None:
        if self.first_name is None or self.device is None:
            return None
        return Visitor(self.first_name, self.last_initial or "", self.device)


_COLUMNS = tuple(Meeting.__dataclass_fields__)


@asynccontextmanager
async def completing(conn: asyncpg.Connection, event: AppointmentEvent) -> AsyncIterator[bool]:
    """One transaction that marks `event` processed (and no longer pending) with its effect;
    yields False when it was processed already."""
    async with conn.transaction():
        first = await mark_processed(conn, event.event_id, event.event_type)
        await conn.execute("DELETE FROM pending_events WHERE event_id = $1", event.event_id)
        yield first


async def is_processed(conn: asyncpg.Connection, event_id: uuid.UUID) -> bool:
    found = await conn.fetchval("SELECT 1 FROM processed_events WHERE event_id = $1", event_id)
    return found is not None


async def get_meeting(conn: asyncpg.Connection, appointment_id: uuid.UUID) -> Meeting | None:
    row = await conn.fetchrow(
        f"SELECT {', '.join(_COLUMNS)} FROM meetings WHERE appointment_id = $1", appointment_id
    )
    return Meeting(**dict(row)) if row is not None else None


async def save(conn: asyncpg.Connection, meeting: Meeting) -> None:
    values = asdict(meeting)
    placeholders = ", ".join(f"${i}" for i in range(1, len(_COLUMNS) + 1))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _COLUMNS if c != "appointment_id")
    await conn.execute(
        f"INSERT INTO meetings ({', '.join(_COLUMNS)}) VALUES ({placeholders}) "
        f"ON CONFLICT (appointment_id) DO UPDATE SET {updates}, updated_at = now()",
        *(values[c] for c in _COLUMNS),
    )


# --- a batch of events: its locks, what is known of them, their completions, set-wise ------


@asynccontextmanager
async def session_all(
    pool: asyncpg.Pool, appointment_ids: Sequence[uuid.UUID]
) -> AsyncIterator[asyncpg.Connection]:
    """`LOCKS.session` for a batch's appointments: one connection holding all their locks,
    taken in one statement in the order of their keys (whoever takes them), so two batches
    never wait for each other in a cycle; freed as the batch ends, however it ends."""
    async with pool.acquire() as conn:
        try:
            await conn.execute(
                "SELECT pg_advisory_lock($1::int, key) FROM ("
                "SELECT DISTINCT key FROM unnest($2::int[]) AS key ORDER BY key) AS keys",
                LOCKS.space,
                [lock_key(appointment_id) for appointment_id in appointment_ids],
            )
            yield conn
        finally:
            await release_session_locks(conn)


@dataclass(frozen=True)
class Known:
    """What the database knows of one event of a batch and of its appointment."""

    processed: bool  # the event was handled before
    erased: bool  # the appointment's person was erased
    holding: bool  # events wait for the appointment (pending_events)
    status: Status | None  # its meeting's, if it has one


async def known(
    conn: asyncpg.Connection, events: Sequence[AppointmentEvent]
) -> dict[uuid.UUID, Known]:
    """`Known` of each event, by event id, in one query. A statement of its own after the
    locks: one that also took them would read what was committed before it waited."""
    rows = await conn.fetch(
        """
        SELECT a.event_id,
            EXISTS (SELECT 1 FROM processed_events p WHERE p.event_id = a.event_id) AS processed,
            EXISTS (SELECT 1 FROM erased_appointments e
                    WHERE e.appointment_id = a.appointment_id) AS erased,
            EXISTS (SELECT 1 FROM pending_events h
                    WHERE h.appointment_id = a.appointment_id) AS holding,
            m.status
        FROM unnest($1::uuid[], $2::uuid[]) AS a(event_id, appointment_id)
        LEFT JOIN meetings m ON m.appointment_id = a.appointment_id
        """,
        [event.event_id for event in events],
        [event.appointment_id for event in events],
    )
    return {
        row["event_id"]: Known(row["processed"], row["erased"], row["holding"], row["status"])
        for row in rows
    }


async def first_attempts(conn: asyncpg.Connection, keys: Sequence[str]) -> set[str]:
    """The creation keys never tried before, now marked tried (migration 006): their creates
    need no look-up first. Committed before the caller sends any create (one statement, no
    transaction open), so an attempt that dies after it is looked up the next time."""
    rows = await conn.fetch(
        "INSERT INTO create_attempts (key) SELECT unnest($1::text[]) "
        "ON CONFLICT (key) DO NOTHING RETURNING key",
        list(keys),
    )
    return {row["key"] for row in rows}


@dataclass(frozen=True)
class Completion:
    """An event handled, and its meeting as it stands after it."""

    event: AppointmentEvent
    meeting: Meeting


_COLUMN_TYPES = {
    "appointment_id": "uuid",
    "revision": "int",
    "start_at": "timestamptz",
    "duration_minutes": "int",
    "recording_authorised": "boolean",
}


async def complete_all(
    conn: asyncpg.Connection, completions: Sequence[Completion], grace: timedelta
) -> None:
    """`completing` + `save` + `schedule_attendance` for many events of appointments that hold
    no events, in one statement (so one transaction): their markers, and the meetings of
    those marked now with their attendance reports' due time; the creation keys of the
    meetings made are forgotten (`first_attempts`)."""
    if not completions:
        return
    columns = ", ".join(_COLUMNS)
    arrays = ", ".join(
        f"${i}::{_COLUMN_TYPES.get(c, 'text')}[]" for i, c in enumerate(_COLUMNS, start=5)
    )
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _COLUMNS if c != "appointment_id")
    values = [asdict(done.meeting) for done in completions]
    await conn.execute(
        f"""
        WITH marked AS (
            INSERT INTO processed_events (event_id, event_type)
            SELECT * FROM unnest($1::uuid[], $2::text[])
            ON CONFLICT (event_id) DO NOTHING RETURNING event_id
        ), done AS (
            SELECT * FROM unnest($3::uuid[], $4::uuid[], {arrays})
                AS d(event_id, correlation_id, {columns})
        ), made AS (  -- a meeting made is never created again under its key (first_attempts)
            DELETE FROM create_attempts USING done
            WHERE create_attempts.key = done.transaction_id AND done.status = 'ready'
        )
        INSERT INTO meetings ({columns}, correlation_id, attendance_due_at)
        SELECT {columns}, correlation_id,
            CASE WHEN status = 'ready' AND online_meeting_id IS NOT NULL
                AND start_at IS NOT NULL AND duration_minutes IS NOT NULL
            THEN start_at + make_interval(mins => duration_minutes) + ${len(_COLUMNS) + 5}::interval
            END
        FROM done JOIN marked USING (event_id)
        ON CONFLICT (appointment_id) DO UPDATE SET {updates}, updated_at = now(),
            correlation_id = CASE WHEN meetings.attendance_outcome IS NULL
                THEN EXCLUDED.correlation_id ELSE meetings.correlation_id END,
            attendance_due_at = CASE WHEN meetings.attendance_outcome IS NULL
                THEN EXCLUDED.attendance_due_at ELSE meetings.attendance_due_at END
        """,
        [done.event.event_id for done in completions],
        [done.event.event_type for done in completions],
        [done.event.event_id for done in completions],
        [done.event.correlation_id for done in completions],
        *([value[c] for value in values] for c in _COLUMNS),
        grace,
    )


# --- events that arrived before their appointment ---------------------------------------


async def hold(conn: asyncpg.Connection, event: AppointmentEvent) -> None:
    """Keep `event` until its appointment is known (a redelivery is kept once)."""
    await conn.execute(
        "INSERT INTO pending_events (event_id, appointment_id, event_type, revision, payload) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING",
        event.event_id,
        event.appointment_id,
        event.event_type,
        event.revision,
        event.model_dump_json(),
    )


async def held(conn: asyncpg.Connection, appointment_id: uuid.UUID) -> list[AppointmentEvent]:
    """The appointment's held events, in the order they should apply."""
    rows = await conn.fetch(
        "SELECT payload FROM pending_events WHERE appointment_id = $1 "
        "ORDER BY revision, received_at",
        appointment_id,
    )
    events = [parse_event(row["payload"]) for row in rows]
    return [e for e in events if isinstance(e, AppointmentEvent)]


async def holds(conn: asyncpg.Connection, appointment_id: uuid.UUID, event_type: str) -> bool:
    found = await conn.fetchval(
        "SELECT 1 FROM pending_events WHERE appointment_id = $1 AND event_type = $2",
        appointment_id,
        event_type,
    )
    return found is not None


# --- after the meeting: the record of connections -------------------------------------------


@dataclass(frozen=True)
class AttendanceDue:
    """A meeting whose attendance report is to be asked for now."""

    appointment_id: uuid.UUID
    revision: int
    advisor_id: str
    online_meeting_id: str
    recording_authorised: bool
    correlation_id: uuid.UUID
    attempts: int


async def schedule_attendance(
    conn: asyncpg.Connection, appointment_id: uuid.UUID, correlation_id: uuid.UUID, grace: timedelta
) -> None:
    """Due at the meeting's end plus `grace` while it is ready; never for a meeting that is
    not (failed, cancelled), nor again once its outcome is published."""
    await conn.execute(
        """
        UPDATE meetings SET
            correlation_id = $2,
            attendance_due_at = CASE
                WHEN status = 'ready' AND online_meeting_id IS NOT NULL
                    AND start_at IS NOT NULL AND duration_minutes IS NOT NULL
                THEN start_at + make_interval(mins => duration_minutes) + $3::interval
            END
        WHERE appointment_id = $1 AND attendance_outcome IS NULL
        """,
        appointment_id,
        correlation_id,
        grace,
    )


async def claim_attendance(
    conn: asyncpg.Connection, now: datetime, passed: list[uuid.UUID]
) -> AttendanceDue | None:
    """The next due meeting, locked until the transaction ends; other replicas skip it."""
    row = await conn.fetchrow(
        """
        SELECT appointment_id, revision, advisor_id, online_meeting_id, recording_authorised,
               correlation_id, attendance_attempts AS attempts
        FROM meetings
        WHERE attendance_due_at <= $1 AND status = 'ready' AND attendance_outcome IS NULL
            AND online_meeting_id IS NOT NULL AND correlation_id IS NOT NULL
            AND NOT appointment_id = ANY($2::uuid[])
        ORDER BY attendance_due_at
        LIMIT 1
        FOR UPDATE SKIP LOCKED
        """,
        now,
        passed,
    )
    return AttendanceDue(**dict(row)) if row is not None else None


async def attendance_later(
    conn: asyncpg.Connection, appointment_id: uuid.UUID, due_at: datetime, attempts: int, error: str
) -> None:
    await conn.execute(
        "UPDATE meetings SET attendance_due_at = $2, attendance_attempts = $3, "
        "attendance_last_error = $4, updated_at = now() WHERE appointment_id = $1",
        appointment_id,
        due_at,
        attempts,
        error,
    )


async def attendance_done(
    conn: asyncpg.Connection,
    appointment_id: uuid.UUID,
    outcome: str,
    attempts: int,
    error: str | None,
    now: datetime,
) -> None:
    await conn.execute(
        "UPDATE meetings SET attendance_outcome = $2, attendance_attempts = $3, "
        "attendance_last_error = $4, attendance_done_at = $5, attendance_due_at = NULL, "
        "updated_at = now() WHERE appointment_id = $1",
        appointment_id,
        outcome,
        attempts,
        error,
        now,
    )
