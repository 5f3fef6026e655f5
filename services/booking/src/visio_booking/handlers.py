"""Booking follows the other services' events to tell callers where an appointment stands:
each event is a step in the history; some move the status (see `store.record_steps` for how
late and out-of-order events are weighed). Idempotent by event_id. Events come in batches (the
consumer's `on_batch`): one transaction and a few set-wise statements for all of them. A step
that moves the status of a partner's appointment also pushes its outcome to the partner
(visio_booking.outcomes), in the same transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from visio_runtime.db import mark_processed_many
from visio_shared import (
    AppointmentEvent,
    MeetingCancelled,
    MeetingFailed,
    MeetingReady,
    MeetingRescheduled,
    NotificationFailed,
    NotificationSent,
)
from visio_shared.events import MeetingAttendanceRecorded  # not re-exported by visio_shared

from visio_booking.appointments import Context
from visio_booking.outcomes import push_outcomes
from visio_booking.store import StepTaken, record_steps

STATUS_EVENTS: tuple[type[AppointmentEvent], ...] = (
    MeetingReady,
    MeetingRescheduled,
    MeetingCancelled,
    MeetingFailed,
    NotificationSent,
    NotificationFailed,
    MeetingAttendanceRecorded,
)

# Emails that tell the person the appointment as it now stands: once one is sent, the person
# has what they need (`confirmed`); if it fails, they do not (`notification_failed`).
TELLS_THE_APPOINTMENT = frozenset(
    {"confirmation", "rescheduled", "contact_corrected", "advisor_changed"}
)


@dataclass(frozen=True)
class Step:
    name: str
    status: str | None = None
    detail: str | None = None
    join_url: str | None = None
    # The meeting's outcome closes the appointment whatever revision it names: a change that
    # meetings never sees (a corrected contact) must not hide that it was held.
    final: bool = False
    # An email that bounced after the relay took it (docs/sms.md): the person does not have
    # what `confirmed` said they had, so it moves the status back.
    undoes_confirmation: bool = False


async def follow_status(pool: asyncpg.Pool, ctx: Context, event: AppointmentEvent) -> Step | None:
    """The step recorded, or None (not a step, or already recorded)."""
    return (await follow_statuses(pool, ctx, [event])).get(event.event_id)


async def follow_statuses(
    pool: asyncpg.Pool, ctx: Context, events: Sequence[AppointmentEvent]
) -> dict[uuid.UUID, Step]:
    """A batch of events (one per appointment, as the consumer's batches are), in one
    transaction: their markers, history rows and status moves written set-wise. The steps
    recorded, by event id; an event that is no step, or was recorded before, is not there."""
    stepped = [(event, step) for event in events if (step := step_of(event)) is not None]
    if not stepped:
        return {}
    async with pool.acquire() as conn, conn.transaction():
        fresh = await mark_processed_many(conn, [event for event, _ in stepped])
        taken = [(event, step) for event, step in stepped if event.event_id in fresh]
        moved = await record_steps(
            conn,
            [
                StepTaken(
                    event.appointment_id,
                    event.revision,
                    step.name,
                    status=step.status,
                    detail=step.detail,
                    join_url=step.join_url,
                    source_event_id=event.event_id,
                    any_revision=step.final,
                    undoes_confirmation=step.undoes_confirmation,
                )
                for event, step in taken
            ],
        )
        await push_outcomes(conn, ctx.topics, ctx.partners, sorted(moved))
    return {event.event_id: step for event, step in taken}


def step_of(event: AppointmentEvent) -> Step | None:
    match event:
        case MeetingReady():
            return Step("meeting_ready", "meeting_ready", join_url=event.join_url)
        case MeetingRescheduled():
            return Step("meeting_rescheduled", join_url=event.join_url)
        case MeetingCancelled():
            return Step("meeting_cancelled", detail=f"advisor {event.advisor_id}")
        case MeetingAttendanceRecorded(public_attended=True):
            return Step("held", "held", final=True)
        case MeetingAttendanceRecorded():
            return Step("no_show", "no_show", "the person never joined the meeting", final=True)
        case MeetingFailed():
            return Step("meeting_failed", "meeting_failed", _why(event.reason, event.detail))
        case NotificationSent(kind=kind) if kind in TELLS_THE_APPOINTMENT:
            return Step("confirmed", "confirmed", None if kind == "confirmation" else kind)
        case NotificationSent():
            return Step("notification_sent", detail=event.kind)
        case NotificationFailed(kind=kind) if kind in TELLS_THE_APPOINTMENT:
            detail = f"{kind}: {_why(event.reason, event.detail)}"
            undo = event.reason == "bounced"
            return Step(
                "notification_failed", "notification_failed", detail, undoes_confirmation=undo
            )
        case NotificationFailed():
            return Step("notification_failed", detail=f"{event.kind}: {event.reason}")
    return None


def _why(reason: str, detail: str) -> str:
    return f"{reason}: {detail}" if detail else reason
