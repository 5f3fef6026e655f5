"""« Changer de créneau »: the person asks, from « Mon rendez-vous », to move their appointment.

Slots belong to the partner system that created the appointment, not to us: booking records
what suits the person (days, parts of the day, a short message), tells the owning partner on its
outcome stream (`reschedule_requested`, with the preferences) and leaves RescheduleRequested on
`appointments.v1`, from which notifications mails the Caf's team for an appointment booked over
HTTP. Nothing of the appointment changes; the move comes as a normal reschedule, which sends the
person the update email with the same join link.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from datetime import date
from typing import get_args

import asyncpg
from pydantic import ValidationError
from visio_shared import ReschedulePreferences, RescheduleRequested, Topics
from visio_shared.booking_replies import RESCHEDULE_REQUESTED
from visio_shared.events import DAY_PART_LABELS, DayPart, Weekday
from visio_shared.events import RESCHEDULE_MESSAGE_MAX as RESCHEDULE_MESSAGE_MAX

from visio_booking import store
from visio_booking.outbox import enqueue
from visio_booking.outcomes import push_reschedule_request

DAYS: tuple[str, ...] = get_args(Weekday)
TIMES: tuple[str, ...] = get_args(DayPart)
TIME_LABELS = DAY_PART_LABELS


class Asked(enum.StrEnum):
    RECORDED = "recorded"
    GONE = "gone"  # no appointment to move any more (cancelled, started, changed since)


def preferences(form: Mapping[str, str]) -> ReschedulePreferences | list[str]:
    """What the form says, or the names of what is missing or wrong (days, times, message)."""
    days = [day for day in DAYS if form.get(f"jour_{day}")]
    times = [part for part in TIMES if form.get(f"moment_{part}")]
    message = " ".join(form.get("message", "").split()) or None
    wrong = [name for name, given in (("days", days), ("times", times)) if not given]
    if message is not None and len(message) > RESCHEDULE_MESSAGE_MAX:
        wrong.append("message")
    from_date: date | None = None
    if given := form.get("a_partir_du", "").strip():
        from_date = day_of(given)
        if from_date is None:
            wrong.append("from_date")
    if wrong:
        return wrong
    try:
        return ReschedulePreferences.model_validate(
            {"days": days, "times": times, "message": message, "from_date": from_date}
        )
    except ValidationError:  # pragma: no cover - every field was checked above
        return ["message"]


def day_of(text: str) -> date | None:
    """`15/12/2026` as a person types it (a plain text field: a date picker's inner fields
    show no keyboard focus), or `2026-12-15`; None if it is no date."""
    try:
        if "/" in text:
            day, month, year = (int(part) for part in text.split("/"))
            return date(year, month, day)
        return date.fromisoformat(text)
    except ValueError:
        return None


async def ask(
    pool: asyncpg.Pool,
    topics: Topics,
    partners: frozenset[str],
    appointment_id: uuid.UUID,
    link_revision: int,
    wanted: ReschedulePreferences,
) -> Asked:
    """Record the request and tell whoever must act on it, in one transaction with the row
    locked: a request is published once it commits, never for one rolled back."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT revision, correlation_id, calling_system, status, start_at "
            "FROM appointments WHERE appointment_id = $1 FOR UPDATE",
            appointment_id,
        )
        if (
            row is None
            or row["revision"] != link_revision
            or row["status"] in ("cancelled", "held", "no_show")
        ):
            return Asked.GONE
        event = RescheduleRequested(
            appointment_id=appointment_id,
            revision=row["revision"],
            correlation_id=row["correlation_id"],
            preferences=wanted,
            calling_system=row["calling_system"],
        )
        await conn.execute(
            "INSERT INTO reschedule_requests (id, appointment_id, revision, preferences) "
            "VALUES ($1, $2, $3, $4)",
            event.event_id,
            appointment_id,
            row["revision"],
            wanted.model_dump_json(),
        )
        await store.add_history(
            conn, appointment_id, RESCHEDULE_REQUESTED, event.revision, None, event.event_id
        )
        await enqueue(conn, topics.appointments, event)
        await push_reschedule_request(conn, topics, partners, event)
    return Asked.RECORDED
