"""Erasure of a person's data (RGPD article 17), started here for every service.

An operator (`visio-rdv ops erasure request`, or `POST /v1/erasures` with the
`personal-data:erase` scope) names a person by their address or an appointment, with a reason.
In one transaction booking pseudonymises its own rows (names, address and subject replaced; the
appointment's times, Caf, advisor and history stay, holding nothing of the person), drops the
outbox rows that carried them, remembers the ids, confirms for itself, and leaves in the outbox
one `PersonalDataErasureRequested` per appointment — ids only, so the topic copies nothing of
what is erased. Each other service erases its part and answers `PersonalDataErased`, which
booking collects: `status` says who has and who has not.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from visio_runtime.erasure import ERASED, remember_erased
from visio_shared import PersonalDataErased, PersonalDataErasureRequested, Topics
from visio_shared.topics import SERVICES

from visio_booking.outbox import enqueue

SERVICE = "booking"


class NothingToErase(LookupError):
    """No appointment (not erased already) matches."""


@dataclass(frozen=True)
class Erasure:
    erasure_id: uuid.UUID
    appointment_ids: list[uuid.UUID]


async def request_erasure(
    conn: asyncpg.Connection,
    topics: Topics,
    *,
    reason: str,
    requested_by: str,
    email: str | None = None,
    appointment_id: uuid.UUID | None = None,
) -> Erasure:
    """Erase booking's part of every appointment of the person and ask the other services for
    theirs. The reason is the operator's: it must not repeat the person's details."""
    if not reason.strip():
        raise ValueError("an erasure needs a reason")
    if (email is None) == (appointment_id is None):
        raise ValueError("name the person by their address or by one appointment, not both")
    async with conn.transaction():
        rows = await conn.fetch(
            "SELECT appointment_id, correlation_id, revision FROM appointments "
            "WHERE erased_at IS NULL AND (lower(email) = lower($1) OR appointment_id = $2) "
            "ORDER BY created_at FOR UPDATE",
            email,
            appointment_id,
        )
        if not rows:
            raise NothingToErase("no appointment of this person is left to erase")
        erasure_id = uuid.uuid4()
        await conn.execute(
            "INSERT INTO erasures (erasure_id, reason, requested_by) VALUES ($1, $2, $3)",
            erasure_id,
            reason.strip(),
            requested_by,
        )
        for row in rows:
            await _erase_appointment(conn, topics, row, erasure_id, requested_by)
    return Erasure(erasure_id, [row["appointment_id"] for row in rows])


async def _erase_appointment(
    conn: asyncpg.Connection,
    topics: Topics,
    row: asyncpg.Record,
    erasure_id: uuid.UUID,
    requested_by: str,
) -> None:
    appointment_id: uuid.UUID = row["appointment_id"]
    await conn.execute(
        "UPDATE appointments SET first_name = $2, last_name = $2, email = '', subject = $2, "
        "mobile = NULL, sms_opt_in = false, erased_at = now(), updated_at = now() "
        "WHERE appointment_id = $1",
        appointment_id,
        ERASED,
    )
    # Pending corrections hold the new address; published events held the old one.
    await conn.execute("DELETE FROM contact_corrections WHERE appointment_id = $1", appointment_id)
    await conn.execute("DELETE FROM reschedule_requests WHERE appointment_id = $1", appointment_id)
    await conn.execute(
        "DELETE FROM outbox WHERE key = $1 OR strpos(payload, $1) > 0", str(appointment_id)
    )
    await conn.execute(
        "INSERT INTO erasure_appointments (erasure_id, appointment_id) VALUES ($1, $2)",
        erasure_id,
        appointment_id,
    )
    await remember_erased(conn, appointment_id, erasure_id)
    await confirm(conn, erasure_id, appointment_id, SERVICE)
    await conn.execute(
        "INSERT INTO appointment_history (appointment_id, status, revision, detail) "
        "VALUES ($1, 'personal_data_erased', $2, $3)",
        appointment_id,
        row["revision"],
        f"erasure {erasure_id}",
    )
    event = PersonalDataErasureRequested(
        appointment_id=appointment_id,
        revision=row["revision"],
        correlation_id=row["correlation_id"],
        erasure_id=erasure_id,
        requested_by=requested_by,
    )
    await enqueue(conn, topics.appointments, event)


async def confirm(
    conn: asyncpg.Connection, erasure_id: uuid.UUID, appointment_id: uuid.UUID, service: str
) -> None:
    await conn.execute(
        "INSERT INTO erasure_confirmations (erasure_id, appointment_id, service) "
        "VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        erasure_id,
        appointment_id,
        service,
    )


async def on_erased(pool: asyncpg.Pool, event: PersonalDataErased) -> None:
    """A service's confirmation (idempotent: the same confirmation twice is one row)."""
    async with pool.acquire() as conn:
        known = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM erasures WHERE erasure_id = $1)", event.erasure_id
        )
        if known:
            await confirm(conn, event.erasure_id, event.appointment_id, event.service)


@dataclass(frozen=True)
class ErasureStatus:
    erasure_id: uuid.UUID
    reason: str
    requested_by: str
    requested_at: datetime
    # appointment → service → when it confirmed (None: not yet)
    confirmations: dict[uuid.UUID, dict[str, datetime | None]]

    @property
    def waiting_for(self) -> list[str]:
        return sorted(
            {s for done in self.confirmations.values() for s, at in done.items() if at is None}
        )

    @property
    def complete(self) -> bool:
        return not self.waiting_for


async def erasure_status(conn: asyncpg.Connection, erasure_id: uuid.UUID) -> ErasureStatus | None:
    head = await conn.fetchrow(
        "SELECT reason, requested_by, requested_at FROM erasures WHERE erasure_id = $1",
        erasure_id,
    )
    if head is None:
        return None
    confirmations: dict[uuid.UUID, dict[str, datetime | None]] = {}
    for row in await conn.fetch(
        "SELECT appointment_id FROM erasure_appointments WHERE erasure_id = $1", erasure_id
    ):
        confirmations[row["appointment_id"]] = dict.fromkeys(SERVICES)
    for row in await conn.fetch(
        "SELECT appointment_id, service, confirmed_at FROM erasure_confirmations "
        "WHERE erasure_id = $1",
        erasure_id,
    ):
        confirmations.setdefault(row["appointment_id"], dict.fromkeys(SERVICES))[row["service"]] = (
            row["confirmed_at"]
        )
    return ErasureStatus(
        erasure_id=erasure_id,
        reason=head["reason"],
        requested_by=head["requested_by"],
        requested_at=head["requested_at"],
        confirmations=confirmations,
    )
