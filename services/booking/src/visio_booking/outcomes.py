"""The outcome of every appointment a partner system created, pushed to its reply topic as it
changes — so a partner on Kafka learns that its booking was confirmed, failed, cancelled, held or
missed without asking, and with no API key.

Written to the outbox in the transaction of the change itself, like every other event: an
outcome is published once the change commits, never for one rolled back, and in order with the
appointment's other messages (keyed by its id). Only appointments owned by a declared partner
(`kafka:<system>`) have an outcome feed; an API key's appointments are read over HTTP.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg
from visio_shared import RescheduleRequested, Topics
from visio_shared.booking_replies import KNOWN_OUTCOMES, RESCHEDULE_REQUESTED, AppointmentOutcome
from visio_shared.booking_requests import kafka_system

from visio_booking.outbox import OutboxRow, enqueue, enqueue_many


async def push_outcome(
    conn: asyncpg.Connection, topics: Topics, partners: frozenset[str], appointment_id: uuid.UUID
) -> AppointmentOutcome | None:
    """Enqueue the appointment's outcome as it now stands (call after the change, in its
    transaction); None if its owner has no feed or its status is no outcome (`requested`,
    `meeting_ready`: the story goes on)."""
    pushed = await push_outcomes(conn, topics, partners, [appointment_id])
    return pushed[0] if pushed else None


async def push_outcomes(
    conn: asyncpg.Connection,
    topics: Topics,
    partners: frozenset[str],
    appointment_ids: Sequence[uuid.UUID],
) -> list[AppointmentOutcome]:
    """`push_outcome` for several appointments (a batch of status moves): their rows read in one
    statement, their outcomes written in another, in the order given; the outcomes pushed."""
    rows = await conn.fetch(
        "SELECT appointment_id, calling_system, correlation_id, status, status_reason, "
        "status_revision FROM appointments WHERE appointment_id = ANY($1::uuid[])",
        list(appointment_ids),
    )
    found = {row["appointment_id"]: row for row in rows}
    outcomes: list[AppointmentOutcome] = []
    for appointment_id in appointment_ids:
        row = found.get(appointment_id)
        if row is None or row["status"] not in KNOWN_OUTCOMES:
            continue
        partner = kafka_system(row["calling_system"])
        if partner is None or partner not in partners:
            continue
        outcomes.append(
            AppointmentOutcome(
                appointment_id=appointment_id,
                revision=row["status_revision"],
                correlation_id=row["correlation_id"],
                calling_system=partner,
                outcome=row["status"],
                detail=row["status_reason"],
            )
        )
    await enqueue_many(
        conn,
        [OutboxRow(topics.partner_replies(o.calling_system), o) for o in outcomes],
    )
    return outcomes


async def push_reschedule_request(
    conn: asyncpg.Connection, topics: Topics, partners: frozenset[str], event: RescheduleRequested
) -> None:
    """`reschedule_requested`, with what suits the person, to the partner that owns the
    appointment's slots (nothing for an appointment booked over HTTP: notifications mails the
    Caf's team instead)."""
    partner = kafka_system(event.calling_system)
    if partner is None or partner not in partners:
        return
    outcome = AppointmentOutcome(
        **event.caused(appointment_id=event.appointment_id, revision=event.revision),
        calling_system=partner,
        outcome=RESCHEDULE_REQUESTED,
        detail="the person asks for another slot",
        preferences=event.preferences,
    )
    await enqueue(conn, topics.partner_replies(partner), outcome)
