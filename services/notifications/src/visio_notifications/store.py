"""Notifications' copy of each appointment and of its meeting (schema `notifications`), the
per-appointment lock, and the flag that says an appointment's emails still need settling.

Appointment events arrive in order on one topic: AppointmentRequested first, then each change
with a higher revision, applied to the stored appointment (`payload` is the appointment as it
stands, in the shape of AppointmentRequested). Meeting events arrive on another topic, in any
order relative to those; the latest revision is kept.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import asyncpg
from visio_runtime.db import SchemaSpec
from visio_runtime.errors import Transient
from visio_runtime.locks import AppointmentLocks
from visio_shared import (
    AdvisorReassigned,
    AppointmentCancelled,
    AppointmentRequested,
    AppointmentRescheduled,
    ContactCorrected,
    MeetingFailed,
    MeetingReady,
)

from visio_notifications import dispatches, link_requests
from visio_notifications.decide import State, number_sha256

SCHEMA = SchemaSpec(schema="notifications", sql_dir=Path(__file__).parent / "migrations")

# The per-appointment lock (`visio_runtime.locks`) in its key space ("NOTI"): a key space of its
# own, apart from the migrations' single-bigint locks.
LOCKS = AppointmentLocks(space=0x4E4F5449)

AppointmentChange = (
    AppointmentRescheduled | ContactCorrected | AdvisorReassigned | AppointmentCancelled
)


async def save_requested_many(
    conn: asyncpg.Connection, events: Sequence[AppointmentRequested]
) -> None:
    """Keep each request's appointment (one per appointment, in one statement): the latest
    revision; an equal or older one changes nothing."""
    if not events:
        return
    await conn.execute(
        """
        INSERT INTO appointments (appointment_id, revision, start_at, payload, correlation_id,
                                  event_id, advisor_revision)
        SELECT appointment_id, revision, start_at, payload::jsonb, correlation_id, event_id,
               revision
        FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::text[], $5::uuid[],
                    $6::uuid[]) AS e(appointment_id, revision, start_at, payload,
                                     correlation_id, event_id)
        ON CONFLICT (appointment_id) DO UPDATE SET
            revision = EXCLUDED.revision,
            start_at = EXCLUDED.start_at,
            payload = EXCLUDED.payload,
            correlation_id = EXCLUDED.correlation_id,
            event_id = EXCLUDED.event_id,
            advisor_revision = EXCLUDED.advisor_revision,
            updated_at = now()
        WHERE appointments.revision < EXCLUDED.revision
        """,
        [event.appointment_id for event in events],
        [event.revision for event in events],
        [event.start for event in events],
        [event.model_dump_json() for event in events],
        [event.correlation_id for event in events],
        [event.event_id for event in events],
    )


async def apply_change(conn: asyncpg.Connection, event: AppointmentChange) -> None:
    """Apply one change to the stored appointment; an older revision changes nothing.

    Raises `Transient` when the appointment itself is unknown: it comes first on the same
    partition, so it can only be missing if it was dead-lettered, and the change must wait
    for its replay rather than be dropped.
    """
    row = await conn.fetchrow(
        "SELECT revision, payload::text AS payload FROM appointments WHERE appointment_id = $1",
        event.appointment_id,
    )
    if row is None:
        raise Transient(f"{event.event_type} before its AppointmentRequested")
    if row["revision"] >= event.revision:
        return
    current = AppointmentRequested.model_validate_json(row["payload"])
    update: dict[str, object] = {"revision": event.revision}
    advisor_revision: int | None = None
    cancellation: str | None = None
    if isinstance(event, AppointmentRescheduled):
        update |= {
            "start": event.start,
            "duration_minutes": event.duration_minutes,
            "timezone": event.timezone,
        }
    elif isinstance(event, ContactCorrected):
        update["user"] = event.user
    elif isinstance(event, AdvisorReassigned):
        update["advisor"] = event.advisor
        advisor_revision = event.revision
    else:
        cancellation = event.model_dump_json()
    appointment = current.model_copy(update=update)
    await conn.execute(
        """
        UPDATE appointments SET
            revision = $2, start_at = $3, payload = $4::jsonb, event_id = $5,
            advisor_revision = COALESCE($6, advisor_revision),
            cancellation = COALESCE($7::jsonb, cancellation),
            updated_at = now()
        WHERE appointment_id = $1
        """,
        event.appointment_id,
        event.revision,
        appointment.start,
        appointment.model_dump_json(),
        event.event_id,
        advisor_revision,
        cancellation,
    )


async def save_meetings(
    conn: asyncpg.Connection, events: Sequence[MeetingReady | MeetingFailed]
) -> None:
    """Keep meetings' latest word on each (ready with a link, or failed for good), one per
    appointment, in one statement: an older revision changes nothing."""
    if not events:
        return
    await conn.execute(
        """
        INSERT INTO meetings (appointment_id, revision, join_url, status, payload, event_id)
        SELECT appointment_id, revision, join_url, status, payload::jsonb, event_id
        FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[], $6::uuid[])
             AS e(appointment_id, revision, join_url, status, payload, event_id)
        ON CONFLICT (appointment_id) DO UPDATE SET
            revision = EXCLUDED.revision,
            join_url = EXCLUDED.join_url,
            status = EXCLUDED.status,
            payload = EXCLUDED.payload,
            event_id = EXCLUDED.event_id,
            updated_at = now()
        WHERE meetings.revision <= EXCLUDED.revision
        """,
        [event.appointment_id for event in events],
        [event.revision for event in events],
        [event.join_url if isinstance(event, MeetingReady) else None for event in events],
        ["ready" if isinstance(event, MeetingReady) else "failed" for event in events],
        [event.model_dump_json() for event in events],
        [event.event_id for event in events],
    )


async def load_state(conn: asyncpg.Connection, appointment_id: uuid.UUID) -> State:
    """Everything known of the appointment, in one statement (it was four round trips, and
    settling an email reads the state twice)."""
    return (await load_states(conn, [appointment_id]))[appointment_id]


async def load_states(
    conn: asyncpg.Connection, appointment_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, State]:
    """`load_state` of each of these appointments, in one statement for them all."""
    rows = await conn.fetch(
        f"""
        SELECT wanted.appointment_id AS wanted, a.payload::text AS appointment,
               a.advisor_revision, a.cancellation::text AS cancellation,
               COALESCE(a.settle_cause, a.event_id) AS cause,
               m.payload::text AS meeting, m.status AS meeting_status,
               {dispatches.HISTORY} AS history,
               {link_requests.PENDING} AS link_requests,
               ARRAY(SELECT s.recipient_sha256 FROM sms_messages s
                     WHERE s.appointment_id = wanted.appointment_id
                       AND s.status = 'failed') AS failed_numbers,
               EXISTS (SELECT FROM sms_messages s
                       WHERE s.appointment_id = wanted.appointment_id
                         AND s.status = 'pending') AS texts_pending
        FROM unnest($1::uuid[]) AS wanted (appointment_id)
        LEFT JOIN appointments a ON a.appointment_id = wanted.appointment_id
        LEFT JOIN meetings m ON m.appointment_id = wanted.appointment_id
        """,
        list(appointment_ids),
    )
    return {row["wanted"]: _state_of(row) for row in rows}


def _state_of(row: asyncpg.Record) -> State:
    appointment = (
        None
        if row["appointment"] is None
        else AppointmentRequested.model_validate_json(row["appointment"])
    )
    mobile = appointment.user.mobile if appointment is not None else None
    meeting: MeetingReady | MeetingFailed | None = None
    if row["meeting"] is not None:
        model = MeetingReady if row["meeting_status"] == "ready" else MeetingFailed
        meeting = model.model_validate_json(row["meeting"])
    return State(
        appointment=appointment,
        advisor_revision=row["advisor_revision"] or 1,
        cancellation=(
            None
            if row["cancellation"] is None
            else AppointmentCancelled.model_validate_json(row["cancellation"])
        ),
        meeting=meeting,
        history=tuple(dispatches.told_of(told) for told in row["history"]),
        link_requests=tuple(link_requests.request_of(r) for r in row["link_requests"]),
        # A text to the mobile the appointment holds now failed for good.
        number_failed=mobile is not None and number_sha256(mobile) in row["failed_numbers"],
        texts_pending=row["texts_pending"],
        cause=row["cause"],
    )


# --- Settling: emails owed but not yet sent ---------------------------------------------------


# Each table read once for the whole batch, by EXCEPT: as anti-joins (NOT EXISTS per table),
# a plan cached while the tables were nearly empty — a new database, a first backlog — read the
# whole of `dispatches` again for every appointment of the batch (70,000 pages a call in the
# backlog bench, a third of PostgreSQL's time). Here a stale plan can cost one scan of a table
# per batch at worst, never one per appointment.
NOTHING_TO_TELL = """
    SELECT appointment_id FROM appointments
    WHERE appointment_id = ANY($1::uuid[]) AND cancellation IS NULL
    EXCEPT SELECT appointment_id FROM meetings WHERE appointment_id = ANY($1::uuid[])
    EXCEPT SELECT appointment_id FROM link_requests
           WHERE appointment_id = ANY($1::uuid[]) AND outcome IS NULL
    EXCEPT SELECT appointment_id FROM dispatches WHERE appointment_id = ANY($1::uuid[])
    EXCEPT SELECT appointment_id FROM sms_messages WHERE appointment_id = ANY($1::uuid[])
"""


async def nothing_to_tell(
    conn: asyncpg.Connection, appointment_ids: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    """Of these appointments just requested, those whose state calls for nothing yet: no
    meeting, no cancellation, no pending request for their link, nothing sent or planned.
    Settling one would read its whole state to decide to do nothing — `decide.owed` waits for
    the meeting, reminders and texts for the first email — so it is not asked for: the
    meeting's event, when it comes, asks for it. One statement for the batch."""
    if not appointment_ids:
        return set()
    rows = await conn.fetch(NOTHING_TO_TELL, list(appointment_ids))
    return {row["appointment_id"] for row in rows}


async def request_settlements(
    conn: asyncpg.Connection, causes: Sequence[tuple[uuid.UUID, uuid.UUID]], after: datetime
) -> None:
    """Mark these appointments as possibly owing an email, each with the event that caused it
    (one per appointment, one statement), for the poller from `after`. Committed with the
    events that changed their state, so a crash before the email leaves the poller something
    to finish."""
    await conn.execute(
        "UPDATE appointments a SET settle_after = $1, settle_cause = c.cause "
        "FROM unnest($2::uuid[], $3::uuid[]) AS c(appointment_id, cause) "
        "WHERE a.appointment_id = c.appointment_id",
        after,
        [appointment_id for appointment_id, _ in causes],
        [cause for _, cause in causes],
    )


async def settled(conn: asyncpg.Connection, appointment_ids: Sequence[uuid.UUID]) -> None:
    """Nothing more owed by these appointments now (one statement)."""
    if not appointment_ids:
        return
    await conn.execute(
        "UPDATE appointments SET settle_after = NULL, settle_attempts = 0, settle_cause = NULL, "
        "settle_error = NULL WHERE appointment_id = ANY($1::uuid[])",
        list(appointment_ids),
    )


async def postpone_settlement(
    conn: asyncpg.Connection, appointment_id: uuid.UUID, until: datetime, error: str
) -> int:
    """The relay could not take the email now: the poller tries again from `until`, and
    `error` (the relay's answer, addresses redacted) says why to whoever looks. Returns how
    many attempts failed so far."""
    attempts: int = await conn.fetchval(
        "UPDATE appointments SET settle_after = $2, settle_attempts = settle_attempts + 1, "
        "settle_error = $3 WHERE appointment_id = $1 RETURNING settle_attempts",
        appointment_id,
        until,
        error[:300],
    )
    return attempts


async def settle_attempts(conn: asyncpg.Connection, appointment_id: uuid.UUID) -> int:
    attempts: int | None = await conn.fetchval(
        "SELECT settle_attempts FROM appointments WHERE appointment_id = $1", appointment_id
    )
    return attempts or 0


async def claim_unsettled(
    conn: asyncpg.Connection, now: datetime, passed: list[uuid.UUID]
) -> uuid.UUID | None:
    """An appointment whose emails are due for another try, row-locked until the caller's
    transaction ends; one another replica holds is skipped. `passed` are those this round
    could not lock (a handler is on them): they wait for the next round."""
    appointment_id: uuid.UUID | None = await conn.fetchval(
        """
        SELECT appointment_id FROM appointments
        WHERE settle_after <= $1 AND NOT (appointment_id = ANY($2::uuid[]))
        ORDER BY settle_after
        LIMIT 1
        FOR UPDATE SKIP LOCKED
        """,
        now,
        passed,
    )
    return appointment_id


async def forget_before(conn: asyncpg.Connection, before: datetime) -> int:
    """Delete what was kept of appointments that started before `before` (names, addresses);
    returns how many. The dispatch log stays: it holds no personal data."""
    deleted: list[uuid.UUID] = [
        row["appointment_id"]
        for row in await conn.fetch(
            "DELETE FROM appointments WHERE start_at < $1 RETURNING appointment_id", before
        )
    ]
    if deleted:
        await conn.execute("DELETE FROM meetings WHERE appointment_id = ANY($1)", deleted)
        await conn.execute("DELETE FROM reminders WHERE appointment_id = ANY($1)", deleted)
    return len(deleted)
