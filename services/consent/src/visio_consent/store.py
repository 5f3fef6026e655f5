"""What consent keeps beside the chain, never in it.

- `subjects`: who a subject_ref was (email, names) for one appointment, until `retain_until`
  (the appointment's end plus the retention period). Personal data: purged when it expires,
  erasable on request; the chain does not depend on it.
- `appointments`: each appointment's pseudonymous context (its current subject_ref, time zone,
  correlation id, latest revision, CGU version, Caf, start, cancellation), kept as long as the
  ledger: withdrawals, the right of access and the self-service pages need it, and it names
  nobody.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
from visio_shared import AppointmentRequested, Person


@dataclass(frozen=True)
class Appointment:
    appointment_id: uuid.UUID
    correlation_id: uuid.UUID
    revision: int
    subject_ref: str
    timezone: str
    cgu_version: str


async def remember_appointment(
    conn: asyncpg.Connection, event: AppointmentRequested, ref: str
) -> None:
    await conn.execute(
        "INSERT INTO appointments "
        "(appointment_id, correlation_id, revision, subject_ref, timezone, cgu_version, starts_at, "
        "caf_code) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (appointment_id) DO NOTHING",
        event.appointment_id,
        event.correlation_id,
        event.revision,
        ref,
        event.timezone,
        event.consent.cgu_version,
        event.start,
        event.caf_code,
    )


async def remember_appointments(
    conn: asyncpg.Connection, requests: Sequence[tuple[AppointmentRequested, str]]
) -> None:
    """`remember_appointment` for a batch of (request, subject_ref), in one statement."""
    await conn.execute(
        "INSERT INTO appointments "
        "(appointment_id, correlation_id, revision, subject_ref, timezone, cgu_version, starts_at, "
        "caf_code) SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int[], $4::text[], "
        "$5::text[], $6::text[], $7::timestamptz[], $8::text[]) "
        "ON CONFLICT (appointment_id) DO NOTHING",
        [event.appointment_id for event, _ in requests],
        [event.correlation_id for event, _ in requests],
        [event.revision for event, _ in requests],
        [ref for _, ref in requests],
        [event.timezone for event, _ in requests],
        [event.consent.cgu_version for event, _ in requests],
        [event.start for event, _ in requests],
        [event.caf_code for event, _ in requests],
    )


async def keep_subjects(
    conn: asyncpg.Connection, kept: Sequence[tuple[str, uuid.UUID, Person, datetime]]
) -> None:
    """`keep_subject` for a batch of (ref, appointment, person, retain_until), one statement;
    one row per (ref, appointment) in it."""
    await conn.execute(
        "INSERT INTO subjects "
        "(subject_ref, appointment_id, email, first_name, last_name, retain_until) "
        "SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[], "
        "$6::timestamptz[]) ON CONFLICT (subject_ref, appointment_id) DO UPDATE "
        "SET email = excluded.email, first_name = excluded.first_name, "
        "last_name = excluded.last_name",
        [ref for ref, _, _, _ in kept],
        [appointment_id for _, appointment_id, _, _ in kept],
        [str(person.email) for _, _, person, _ in kept],
        [person.first_name for _, _, person, _ in kept],
        [person.last_name for _, _, person, _ in kept],
        [until for _, _, _, until in kept],
    )


async def lock_appointment(
    conn: asyncpg.Connection, appointment_id: uuid.UUID
) -> Appointment | None:
    """The appointment's context, locked until the transaction ends: two withdrawals or
    corrections of one appointment queue instead of both deciding on the same state."""
    row = await conn.fetchrow(
        "SELECT appointment_id, correlation_id, revision, subject_ref, timezone, cgu_version "
        "FROM appointments WHERE appointment_id = $1 FOR UPDATE",
        appointment_id,
    )
    return Appointment(**dict(row)) if row else None


async def move_appointment(
    conn: asyncpg.Connection, appointment_id: uuid.UUID, revision: int, ref: str
) -> None:
    await conn.execute(
        "UPDATE appointments SET subject_ref = $3, revision = greatest(revision, $2), "
        "updated_at = now() WHERE appointment_id = $1",
        appointment_id,
        revision,
        ref,
    )


async def keep_subject(
    conn: asyncpg.Connection,
    ref: str,
    appointment_id: uuid.UUID,
    person: Person,
    retain_until: datetime,
) -> None:
    """Keep (or correct) who `ref` is for this appointment, until `retain_until`."""
    await conn.execute(
        "INSERT INTO subjects "
        "(subject_ref, appointment_id, email, first_name, last_name, retain_until) "
        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (subject_ref, appointment_id) DO UPDATE "
        "SET email = excluded.email, first_name = excluded.first_name, "
        "last_name = excluded.last_name",
        ref,
        appointment_id,
        str(person.email),
        person.first_name,
        person.last_name,
        retain_until,
    )


async def follow_change(
    conn: asyncpg.Connection,
    appointment_id: uuid.UUID,
    revision: int,
    *,
    starts_at: datetime | None = None,
    timezone: str | None = None,
    cancelled_at: datetime | None = None,
) -> bool:
    """Take a change of the appointment (its revision, and a new start or a cancellation) unless
    a later revision is already known; False if the appointment is not known at all."""
    status: str = await conn.execute(
        "UPDATE appointments SET "
        "starts_at = CASE WHEN revision <= $2 THEN coalesce($3, starts_at) ELSE starts_at END, "
        "timezone = CASE WHEN revision <= $2 THEN coalesce($4, timezone) ELSE timezone END, "
        "cancelled_at = coalesce(cancelled_at, $5), "
        "revision = greatest(revision, $2), updated_at = now() "
        "WHERE appointment_id = $1",
        appointment_id,
        revision,
        starts_at,
        timezone,
        cancelled_at,
    )
    return status != "UPDATE 0"


def retain_until(event: AppointmentRequested, retention_days: int) -> datetime:
    ends = event.start + timedelta(minutes=event.duration_minutes)
    return ends + timedelta(days=retention_days)


async def retention_of(conn: asyncpg.Connection, appointment_id: uuid.UUID) -> datetime | None:
    """When the personal data kept for this appointment expires (None if none is kept)."""
    found: datetime | None = await conn.fetchval(
        "SELECT max(retain_until) FROM subjects WHERE appointment_id = $1", appointment_id
    )
    return found


async def purge_expired_subjects(conn: asyncpg.Connection) -> int:
    """Erase the personal data whose retention has ended; the chain is untouched."""
    status: str = await conn.execute("DELETE FROM subjects WHERE retain_until < now()")
    return int(status.split()[-1])
