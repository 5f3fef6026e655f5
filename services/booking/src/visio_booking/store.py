"""Booking's appointment tables, in plain SQL: the appointment row, its history, and the status
projection that follows the other services' events."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from visio_runtime.db import SchemaSpec
from visio_shared import Advisor, AppointmentRequested, Person

from visio_booking.outbox import CHANNEL, OutboxRow

SCHEMA = SchemaSpec(schema="booking", sql_dir=Path(__file__).parent / "migrations")

# Within one revision, later steps of an appointment's life never move it back to earlier ones.
STATUS_RANK = {
    "requested": 0,
    "meeting_ready": 1,
    "meeting_failed": 2,
    "notification_failed": 3,
    "confirmed": 4,
    "held": 6,
    "no_show": 6,
    "failed_technical": 6,
}
FINAL = frozenset({"cancelled"})


@dataclass(frozen=True)
class Claim:
    """An idempotency key to take with a booking, and the answer it keeps for a repeat."""

    caller: str
    key: str
    fingerprint: str
    response: str


# A booking in one statement, so in one round trip and its own transaction: the caller's API key
# checked, the idempotency key claimed with its answer, the appointment, its history and its
# outbox rows (the event, and a Kafka caller's reply), and the relay woken. The API key ($19,
# NULL over Kafka) must be unrevoked as the statement starts — so a revocation committed
# before the request refuses it, as a look-up first would — or nothing is written. Without an
# idempotency key ($23 NULL) the appointment is simply written; with one, only if it was free:
# a key already taken (or taken by a twin that commits meanwhile: ON CONFLICT waits for it)
# writes nothing. An advisor's overlapping appointment fails the whole statement (migration
# 007's exclusion constraint).
BOOK = f"""
WITH api_key AS (
    SELECT $19::bigint IS NULL
        OR EXISTS (SELECT FROM api_keys WHERE id = $19 AND revoked_at IS NULL) AS valid
), claimed AS (
    INSERT INTO idempotency_keys (caller, key, fingerprint, request_type, status_code, response)
    SELECT $22, $23, $24, 'BookAppointment', 202, $25
    WHERE $23::text IS NOT NULL AND (SELECT valid FROM api_key)
    ON CONFLICT DO NOTHING
    RETURNING true
), appointment AS (
    INSERT INTO appointments (
        appointment_id, correlation_id, revision, status, caf_code, advisor_id, advisor_name,
        start_at, duration_minutes, timezone, subject, first_name, last_name, email, device,
        cgu_version, cgu_accepted_at, recording_authorised, calling_system, api_key_id,
        mobile, sms_opt_in)
    SELECT $1, $2, $3, 'requested', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
           $15, $16, $17, $18, $19, $20, $21
    WHERE (SELECT valid FROM api_key) AND ($23::text IS NULL OR EXISTS (SELECT FROM claimed))
    RETURNING appointment_id, revision
), history AS (
    INSERT INTO appointment_history (appointment_id, status, revision, source_event_id)
    SELECT appointment_id, 'requested', revision, $26 FROM appointment
), queued AS (
    INSERT INTO outbox (event_id, topic, key, payload, headers)
    SELECT o.event_id, o.topic, o.key, o.payload, o.headers::jsonb
    FROM appointment,
         unnest($27::uuid[], $28::text[], $29::text[], $30::text[], $31::text[])
             AS o(event_id, topic, key, payload, headers)
    RETURNING 1
)
SELECT CASE WHEN EXISTS (SELECT FROM appointment) THEN 'booked'
            WHEN (SELECT valid FROM api_key) THEN 'key-taken'
            ELSE 'api-key-revoked' END AS result,
       (SELECT pg_notify('{CHANNEL}', '') FROM queued LIMIT 1) AS woken
"""


async def book(
    conn: asyncpg.Connection,
    event: AppointmentRequested,
    api_key_id: int | None,
    claim: Claim | None,
    outbox: Sequence[OutboxRow],
) -> str:
    """Write the booking (see BOOK): 'booked', else why not — 'key-taken' (its idempotency
    key), 'api-key-revoked'."""
    result: str = await conn.fetchval(
        BOOK,
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
        api_key_id,
        event.user.mobile,
        event.user.sms_opt_in,
        claim and claim.caller,
        claim and claim.key,
        claim and claim.fingerprint,
        claim and claim.response,
        event.event_id,
        *_columns([row.values() for row in outbox], 5),
    )
    return result


async def lock_appointment(conn: asyncpg.Connection, appointment_id: uuid.UUID) -> asyncpg.Record:
    """The row, locked until the transaction ends: one change at a time per appointment."""
    row: asyncpg.Record = await conn.fetchrow(
        "SELECT * FROM appointments WHERE appointment_id = $1 FOR UPDATE", appointment_id
    )
    return row


async def reschedule(
    conn: asyncpg.Connection, appointment_id: uuid.UUID, start: datetime, duration_minutes: int
) -> int:
    return await _change(
        conn,
        appointment_id,
        "start_at = $2, duration_minutes = $3, overlap_grandfathered = false",
        start,
        duration_minutes,
    )


async def correct_contact(conn: asyncpg.Connection, appointment_id: uuid.UUID, user: Person) -> int:
    return await _change(
        conn,
        appointment_id,
        "first_name = $2, last_name = $3, email = $4, device = $5, mobile = $6, sms_opt_in = $7",
        user.first_name,
        user.last_name,
        str(user.email),
        user.device.value,
        user.mobile,
        user.sms_opt_in,
    )


async def reassign(conn: asyncpg.Connection, appointment_id: uuid.UUID, advisor: Advisor) -> int:
    # A new meeting is asked for: back to `requested`, and the old link is gone with the old
    # meeting; only the new revision's events may set status and link again.
    return await _change(
        conn,
        appointment_id,
        "advisor_id = $2, advisor_name = $3, overlap_grandfathered = false, "
        "status = 'requested', status_reason = NULL, "
        "status_revision = revision + 1, join_url = NULL, join_url_revision = revision + 1",
        advisor.id,
        advisor.display_name,
    )


async def cancel(conn: asyncpg.Connection, appointment_id: uuid.UUID, reason: str) -> int:
    return await _change(
        conn,
        appointment_id,
        "status = 'cancelled', status_reason = $2, status_revision = revision + 1, "
        "cancelled_at = now(), join_url = NULL, join_url_revision = revision + 1",
        reason,
    )


async def _change(
    conn: asyncpg.Connection, appointment_id: uuid.UUID, assignments: str, *values: Any
) -> int:
    """Apply a change and raise the revision; returns the new revision."""
    revision: int = await conn.fetchval(
        f"UPDATE appointments SET {assignments}, revision = revision + 1, updated_at = now() "
        "WHERE appointment_id = $1 RETURNING revision",
        appointment_id,
        *values,
    )
    return revision


async def add_history(
    conn: asyncpg.Connection,
    appointment_id: uuid.UUID,
    step: str,
    revision: int,
    detail: str | None,
    source_event_id: uuid.UUID | None,
) -> None:
    await conn.execute(
        "INSERT INTO appointment_history "
        "(appointment_id, status, revision, detail, source_event_id) VALUES ($1, $2, $3, $4, $5)",
        appointment_id,
        step,
        revision,
        detail,
        source_event_id,
    )


@dataclass(frozen=True)
class StepTaken:
    """A downstream step of one appointment, as the status follower records it."""

    appointment_id: uuid.UUID
    revision: int
    step: str
    status: str | None = None
    detail: str | None = None
    join_url: str | None = None
    source_event_id: uuid.UUID | None = None
    # Speaks of the appointment as it stands, not of one revision (the meeting's outcome).
    any_revision: bool = False
    # A bounce: `confirmed` at the same revision was wrong (see handlers.Step).
    undoes_confirmation: bool = False


async def record_steps(conn: asyncpg.Connection, steps: Sequence[StepTaken]) -> set[uuid.UUID]:
    """Keep downstream steps in the history, and let them move the status and the link: one
    step per appointment, all in a few statements (a batch of the status follower). Returns
    the appointments whose status moved.

    Events of one appointment arrive in any order across topics, and late after a change, so:
    a newer revision's step always wins; within the revision the status only moves forward;
    an older revision's step is history only; a cancelled appointment stays cancelled.
    """
    assert len({step.appointment_id for step in steps}) == len(steps), "one step per appointment"
    if not steps:
        return set()
    # Locked in one order whoever locks them, so two batches never deadlock.
    rows = {
        row["appointment_id"]: row
        for row in await conn.fetch(
            "SELECT appointment_id, status, status_revision, join_url_revision, "
            "outcome_reported_at FROM appointments "
            "WHERE appointment_id = ANY($1::uuid[]) ORDER BY appointment_id FOR UPDATE",
            [step.appointment_id for step in steps],
        )
    }
    history: list[tuple[uuid.UUID, str, int, str | None, uuid.UUID | None]] = []
    # Per appointment, the link and the status a step moves: (join_url, revision) and
    # (status, reason, revision).
    link_of: dict[uuid.UUID, tuple[str, int]] = {}
    status_of: dict[uuid.UUID, tuple[str, str | None, int]] = {}
    for step in steps:
        row = rows.get(step.appointment_id)
        if row is None:
            continue
        revision = step.revision
        if step.any_revision:
            revision = max(revision, row["status_revision"])
        history.append(
            (step.appointment_id, step.step, revision, step.detail, step.source_event_id)
        )
        final = row["status"] in FINAL
        if step.join_url is not None and revision >= row["join_url_revision"] and not final:
            link_of[step.appointment_id] = (step.join_url, revision)
        if _moves_status(step.status, revision, row) or (
            step.undoes_confirmation
            and row["status"] == "confirmed"
            and revision == row["status_revision"]
        ):
            assert step.status is not None
            status_of[step.appointment_id] = (step.status, step.detail, revision)
    await conn.execute(
        "INSERT INTO appointment_history (appointment_id, status, revision, detail, "
        "source_event_id) SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], "
        "$5::uuid[])",
        *_columns(history, 5),
    )
    # The link and the status of each appointment in one new version of its row (a HOT
    # update, migration 011): the fields a step does not move keep their value.
    changed = [
        (appointment_id, *link_of.get(appointment_id, (None, None)),
         *status_of.get(appointment_id, (None, None, None)))
        for appointment_id in dict.fromkeys([*link_of, *status_of])
    ]  # fmt: skip
    if changed:
        await conn.execute(
            """
            UPDATE appointments a SET
                join_url = CASE WHEN u.link_revision IS NULL THEN a.join_url ELSE u.join_url END,
                join_url_revision = COALESCE(u.link_revision, a.join_url_revision),
                status = COALESCE(u.status, a.status),
                status_reason = CASE WHEN u.status IS NULL THEN a.status_reason
                                     ELSE u.reason END,
                status_revision = COALESCE(u.status_revision, a.status_revision),
                updated_at = now()
            FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::text[], $6::int[])
                 AS u(appointment_id, join_url, link_revision, status, reason, status_revision)
            WHERE a.appointment_id = u.appointment_id
            """,
            *_columns(changed, 6),
        )
    return set(status_of)


def _moves_status(status: str | None, revision: int, row: asyncpg.Record) -> bool:
    if status is None or row["status"] in FINAL or revision < row["status_revision"]:
        return False
    if row["outcome_reported_at"] is not None and STATUS_RANK[status] >= STATUS_RANK["held"]:
        return False  # the advisor's report wins over the attendance report (history only)
    return revision > row["status_revision"] or STATUS_RANK[status] > STATUS_RANK[row["status"]]


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as columns, for `unnest`."""
    return [[row[index] for row in rows] for index in range(width)]


async def fetch_appointment(pool: asyncpg.Pool, appointment_id: uuid.UUID) -> dict[str, Any] | None:
    """The appointment and its history as of one moment: both read in one snapshot, so a step
    recorded between the two reads cannot show in the history and not in the status."""
    async with (
        pool.acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
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
