"""What a caller can do to an appointment — book, reschedule, cancel, correct the contact,
reassign — one function each, the same for HTTP and Kafka.

A booking is validated here and written by `visio_booking.intake` in one statement. Each change
runs in the caller's transaction with the appointment's row locked, raises the revision,
writes the history and leaves its event in the outbox. A caller sees only the appointments it
booked unless it is an admin: to anyone else an appointment does not exist (404, not 403, so
its existence does not leak). Refusals are `Problem`s or pydantic `ValidationError`s.
"""

from __future__ import annotations

import contextlib
import uuid
import zoneinfo
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from visio_runtime.problems import Problem, invalid
from visio_shared import (
    Advisor,
    AdvisorReassigned,
    AppointmentCancelled,
    AppointmentRequested,
    AppointmentRescheduled,
    ConsentGiven,
    ContactCorrected,
    Device,
    Person,
    Topics,
    current_cgu,
)
from visio_shared.booking_requests import (
    BookingRequest,
    CancelRequest,
    ContactCorrection,
    ReassignRequest,
    RescheduleRequest,
)

from visio_booking import store
from visio_booking.idempotency import Outcome
from visio_booking.outbox import enqueue
from visio_booking.outcomes import push_outcome


@dataclass(frozen=True)
class Caller:
    """Who asks: an API key's holder, or a system writing to the inbound topic."""

    name: str  # an API key's name, or `kafka:<system>` (visio_shared.booking_requests)
    admin: bool = False  # only ever from an API key's scope: never over Kafka
    key_id: int | None = None
    channel: str = "api"  # how the person's consent reached us: 'api' or 'kafka'
    # False: the key's holder came from memory; the write checks that the key is unrevoked.
    key_checked: bool = True

    def owns(self, row: asyncpg.Record | dict[str, Any]) -> bool:
        return self.admin or row["calling_system"] == self.name


@dataclass(frozen=True)
class Context:
    topics: Topics
    horizon_days: int = 180
    duration_bounds: tuple[int, int] = (10, 120)
    # Declared partner systems: their appointments' outcomes go to their reply topics.
    partners: frozenset[str] = frozenset()

    def rules(self, **extra: Any) -> dict[str, Any]:
        """The validation context of the shared request models."""
        return {"horizon_days": self.horizon_days, "duration_bounds": self.duration_bounds, **extra}


@dataclass(frozen=True)
class Command:
    request_type: str
    payload: Any
    appointment_id: uuid.UUID | None = None
    idempotency_key: str | None = None


Handler = Callable[[asyncpg.Connection, Context, Caller, Command], Awaitable[Outcome]]


def not_found(appointment_id: uuid.UUID | None) -> Problem:
    return Problem(404, "not-found", "Not Found", f"no appointment {appointment_id}")


def booking(ctx: Context, caller: Caller, cmd: Command) -> AppointmentRequested:
    """A booking request's event, once the request is valid (else its refusal is raised).
    Written by `visio_booking.intake` in one statement (store.book), not by a `Handler`: a new
    appointment has no row to lock and nothing to read first."""
    return requested_event(BookingRequest.model_validate(cmd.payload, context=ctx.rules()), caller)


def requested_event(booking: BookingRequest, caller: Caller) -> AppointmentRequested:
    appointment_id = uuid.uuid4()
    return AppointmentRequested(
        appointment_id=appointment_id,
        revision=1,
        correlation_id=appointment_id,
        caf_code=booking.caf_code,
        advisor=Advisor(id=booking.advisor.id, display_name=booking.advisor.display_name),
        start=booking.start,
        duration_minutes=booking.duration_minutes,
        timezone=booking.timezone,
        subject=booking.subject,
        user=Person(
            first_name=booking.user.first_name,
            last_name=booking.user.last_name,
            email=booking.user.email,
            device=booking.user.device,
            mobile=booking.user.mobile,
            sms_opt_in=booking.user.sms_opt_in,
        ),
        consent=ConsentGiven(
            cgu_version=booking.consent.cgu_version,
            cgu_sha256=current_cgu().sha256,
            accepted_at=booking.consent.accepted_at,
            recording_authorised=booking.consent.recording_authorised,
            channel=caller.channel,
        ),
        calling_system=caller.name,
    )


async def reschedule(
    conn: asyncpg.Connection, ctx: Context, caller: Caller, cmd: Command
) -> Outcome:
    row = await _changeable(conn, caller, cmd.appointment_id)
    zone = zoneinfo.ZoneInfo(row["timezone"])
    change = RescheduleRequest.model_validate(
        cmd.payload, context=ctx.rules(timezone=row["timezone"])
    )
    start = (change.start or row["start_at"]).astimezone(zone)
    duration = change.duration_minutes or row["duration_minutes"]
    if start == row["start_at"] and duration == row["duration_minutes"]:
        raise invalid([{"field": "(body)", "message": "the appointment is already at that time"}])
    async with advisor_free(conn, row["advisor_id"]):
        revision = await store.reschedule(conn, row["appointment_id"], start, duration)
    event = AppointmentRescheduled(
        **_lineage(row, revision),
        start=start,
        duration_minutes=duration,
        timezone=row["timezone"],
        previous_start=row["start_at"].astimezone(zone),
        previous_duration_minutes=row["duration_minutes"],
    )
    detail = (
        f"from {_local(row['start_at'], zone)} ({row['duration_minutes']} min) "
        f"to {_local(start, zone)} ({duration} min)"
    )
    return await _changed(conn, ctx, event, "rescheduled", detail, row["status"])


async def cancel(conn: asyncpg.Connection, ctx: Context, caller: Caller, cmd: Command) -> Outcome:
    row = await _changeable(conn, caller, cmd.appointment_id)
    request = CancelRequest.model_validate(cmd.payload)
    revision = await store.cancel(conn, row["appointment_id"], request.reason)
    event = AppointmentCancelled(
        **_lineage(row, revision), reason=request.reason, cancelled_by=caller.name
    )
    detail = f"{request.reason}, by {caller.name}"
    outcome = await _changed(conn, ctx, event, "cancelled", detail, "cancelled")
    await push_outcome(conn, ctx.topics, ctx.partners, row["appointment_id"])
    return outcome


async def correct_contact(
    conn: asyncpg.Connection, ctx: Context, caller: Caller, cmd: Command
) -> Outcome:
    row = await _changeable(conn, caller, cmd.appointment_id)
    correction = ContactCorrection.model_validate(cmd.payload)
    current = Person(
        first_name=row["first_name"],
        last_name=row["last_name"],
        email=row["email"],
        device=Device(row["device"]),
        mobile=row["mobile"],
        sms_opt_in=row["sms_opt_in"],
    )
    corrected = current.model_copy(update=correction.model_dump(exclude_none=True))
    if corrected.sms_opt_in and corrected.mobile is None:
        raise invalid([{"field": "mobile", "message": "is needed to receive text messages"}])
    changed = [
        name for name in Person.model_fields if getattr(corrected, name) != getattr(current, name)
    ]
    if not changed:
        raise invalid([{"field": "(body)", "message": "these are already the person's details"}])
    revision = await store.correct_contact(conn, row["appointment_id"], corrected)
    event = ContactCorrected(**_lineage(row, revision), user=corrected)
    # The history names what changed, never the values: it is read by callers and operators.
    return await _changed(conn, ctx, event, "contact_corrected", ", ".join(changed), row["status"])


async def reassign(conn: asyncpg.Connection, ctx: Context, caller: Caller, cmd: Command) -> Outcome:
    row = await _changeable(conn, caller, cmd.appointment_id)
    request = ReassignRequest.model_validate(cmd.payload)
    if request.advisor.id == row["advisor_id"]:
        raise invalid([{"field": "advisor.id", "message": "is already the appointment's advisor"}])
    advisor = Advisor(id=request.advisor.id, display_name=request.advisor.display_name)
    async with advisor_free(conn, advisor.id):
        revision = await store.reassign(conn, row["appointment_id"], advisor)
    event = AdvisorReassigned(
        **_lineage(row, revision),
        advisor=advisor,
        previous_advisor=Advisor(id=row["advisor_id"], display_name=row["advisor_name"]),
    )
    detail = f"from {row['advisor_id']} to {advisor.id}"
    return await _changed(conn, ctx, event, "advisor_reassigned", detail, "requested")


HANDLERS: dict[str, Handler] = {
    "RescheduleAppointment": reschedule,
    "CancelAppointment": cancel,
    "CorrectContact": correct_contact,
    "ReassignAdvisor": reassign,
}


async def _changeable(
    conn: asyncpg.Connection, caller: Caller, appointment_id: uuid.UUID | None
) -> asyncpg.Record:
    """The caller's appointment, locked, if it can still change; else why not."""
    row = await store.lock_appointment(conn, appointment_id) if appointment_id else None
    if row is None or not caller.owns(row):
        raise not_found(appointment_id)
    if row["erased_at"] is not None:
        # Nothing may write the person back: not a partner's late correction, nor a replay.
        raise Problem(
            410,
            "personal-data-erased",
            "The person's data was erased",
            f"the personal data of appointment {appointment_id} was erased; it cannot change",
        )
    zone = zoneinfo.ZoneInfo(row["timezone"])
    if row["status"] == "cancelled":
        raise Problem(
            409,
            "appointment-cancelled",
            "The appointment is cancelled",
            f"appointment {appointment_id} was cancelled on {_local(row['cancelled_at'], zone)} "
            f"(reason: {row['status_reason']}); a cancelled appointment cannot change",
        )
    if row["start_at"] <= datetime.now(UTC):
        raise Problem(
            409,
            "appointment-past",
            "The appointment is past",
            f"appointment {appointment_id} started on {_local(row['start_at'], zone)}; "
            "a past appointment cannot change",
        )
    return row


@contextlib.asynccontextmanager
async def advisor_free(conn: asyncpg.Connection, advisor_id: str) -> AsyncIterator[None]:
    """Refuse, as a 409, a write that would give the advisor two live appointments at once.

    The database decides (migration 007's exclusion constraint), so two concurrent requests for
    overlapping slots cannot both pass: the second waits for the first to commit, then fails
    here. The transaction is rolled back with the Problem, leaving nothing behind."""
    try:
        yield
    except asyncpg.ExclusionViolationError as exc:
        if exc.constraint_name != "appointments_advisor_no_overlap":
            raise
        raise Problem(
            409,
            "advisor-unavailable",
            "The advisor already has an appointment at that time",
            f"advisor {advisor_id} already has a live appointment that overlaps this slot; "
            "choose another time or another advisor",
        ) from exc


def _lineage(row: asyncpg.Record, revision: int) -> dict[str, Any]:
    # A change comes from a caller, not from an event: no causation id, the appointment's
    # correlation id so the whole story reads as one.
    return {
        "appointment_id": row["appointment_id"],
        "revision": revision,
        "correlation_id": row["correlation_id"],
    }


async def _changed(
    conn: asyncpg.Connection,
    ctx: Context,
    event: AppointmentRescheduled | AppointmentCancelled | ContactCorrected | AdvisorReassigned,
    step: str,
    detail: str,
    status: str,
) -> Outcome:
    await store.add_history(
        conn, event.appointment_id, step, event.revision, detail, event.event_id
    )
    await enqueue(conn, ctx.topics.appointments, event)
    return accepted(event.appointment_id, event.revision, status)


def accepted(appointment_id: uuid.UUID, revision: int, status: str) -> Outcome:
    return Outcome(
        202, {"appointment_id": str(appointment_id), "revision": revision, "status": status}
    )


def _local(moment: datetime | None, zone: zoneinfo.ZoneInfo) -> str:
    return moment.astimezone(zone).isoformat(timespec="minutes") if moment else "?"
