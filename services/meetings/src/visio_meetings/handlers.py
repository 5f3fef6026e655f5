"""What meetings does with each event of an appointment, and what it answers on `meetings.v1`.

Delivery is at least once, so every step is safe to repeat (`meeting` says how for Graph,
`answers` for what is published). Each event is handled under its appointment's lock (the
consumer's batches: `batch`, which makes new meetings set-wise and hands every other event
here, one at a time, on its connection holding the batch's locks):

1. events held for the appointment apply first, once the appointment is known;
2. an event already processed is skipped;
3. `AppointmentRequested` makes the meeting. A change (reschedule, cancellation, new advisor,
   recording withdrawn) of an appointment not known yet is held, never dropped: order holds
   within appointments.v1, not across topics (a withdrawal on consents.v1 may come first), and
   an appointment's request may wait in the dead-letter topic while its changes go by.

Graph's refusals:
- a meeting that cannot be made or moved: `MeetingFailed` with a reason (the person has no
  meeting that works: booking and notifications must know);
- a cancellation or a recording withdrawal that Graph refuses leaves a meeting that works, so
  `MeetingFailed` would tell the person their appointment is off: the event is dead-lettered
  at once with the reason (`NeedsOperator`), for ops to fix the cause and replay it.
Transient failures propagate: the shared consumer retries them, then dead-letters them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import timedelta

import asyncpg
from visio_runtime import defects
from visio_runtime.erasure import is_erased
from visio_runtime.errors import Poison
from visio_shared import (
    AdvisorReassigned,
    AppointmentCancelled,
    AppointmentEvent,
    AppointmentRequested,
    AppointmentRescheduled,
    ContactCorrected,
    Envelope,
    PersonalDataErasureRequested,
    RecordingConsentWithdrawn,
    Topics,
)
from visio_shared.publishing import Publisher, publish_event

from visio_meetings import answers, erasure, store
from visio_meetings.advisor_note import AdvisorNote, Visitor, advisor_page
from visio_meetings.event_updates import rewrite_note
from visio_meetings.graph import GraphClient
from visio_meetings.meeting import Created, create_meeting
from visio_meetings.outcomes import context, failed, made, refused_by_defect, refused_row
from visio_meetings.payloads import LOCAL_BOOKING_URL, MeetingSpec, meeting_key
from visio_meetings.provisioning import Provisioner
from visio_meetings.refusals import GraphRefused
from visio_meetings.rows import row_of
from visio_meetings.store import Meeting

log = logging.getLogger(__name__)

DEFAULT_SUBJECT = "Rendez-vous Caf"

HANDLED: tuple[type[AppointmentEvent], ...] = (
    AppointmentRequested,
    AppointmentRescheduled,
    AppointmentCancelled,
    AdvisorReassigned,
    RecordingConsentWithdrawn,
    ContactCorrected,
    PersonalDataErasureRequested,
)


class NeedsOperator(Poison):
    """Graph refused a change that leaves the meeting usable: dead-lettered with the reason."""


@dataclass(frozen=True)
class MeetingsDeps:
    pool: asyncpg.Pool
    graph: GraphClient
    publisher: Publisher
    topics: Topics
    # After the meeting's end, the wait before its attendance report is first asked for.
    attendance_grace: timedelta = timedelta(minutes=15)
    # Gathers the meetings handlers make at the same time into shared Graph batches; without
    # one, each meeting's steps go in batches of its own.
    provisioner: Provisioner | None = None
    # Booking's public address: each event links to the advisor's page there.
    booking_public_url: str = LOCAL_BOOKING_URL

    def note(self, meeting: Meeting) -> AdvisorNote:
        """What the meeting's event body says now."""
        return AdvisorNote(
            appointment_id=meeting.appointment_id,
            subject=meeting.subject or DEFAULT_SUBJECT,
            recording_authorised=meeting.recording_authorised,
            visitor=meeting.visitor,
            advisor_page=advisor_page(self.booking_public_url, meeting.appointment_id),
        )

    def spec(self, event: AppointmentRequested, *, withdrawn: bool = False) -> MeetingSpec:
        """The meeting an appointment's request asks for (`withdrawn`: a withdrawal of its
        recording consent came first)."""
        return MeetingSpec(
            appointment_id=event.appointment_id,
            advisor_id=event.advisor.id,
            key=meeting_key(event.appointment_id),
            subject=event.subject,
            start=event.start,
            duration_minutes=event.duration_minutes,
            timezone=event.timezone,
            recording_authorised=event.consent.recording_authorised and not withdrawn,
            visitor=Visitor.of(event.user),
            booking_public_url=self.booking_public_url,
        )

    def respec(self, meeting: Meeting, advisor_id: str, revision: int) -> MeetingSpec:
        """A new meeting for the appointment as it stands (a change of advisor)."""
        assert meeting.start_at is not None and meeting.duration_minutes is not None
        return MeetingSpec(
            appointment_id=meeting.appointment_id,
            advisor_id=advisor_id,
            key=meeting_key(meeting.appointment_id, reassigned_at=revision),
            subject=meeting.subject or DEFAULT_SUBJECT,
            start=meeting.start_at,
            duration_minutes=meeting.duration_minutes,
            timezone=meeting.timezone or "UTC",
            recording_authorised=meeting.recording_authorised,
            visitor=meeting.visitor,
            booking_public_url=self.booking_public_url,
        )

    async def make_meeting(self, spec: MeetingSpec) -> Created:
        if self.provisioner is not None:
            return await self.provisioner.provision(spec)
        return await create_meeting(self.graph, spec)


@dataclass(frozen=True)
class _Handling:
    """One event's handling: the locked connection and the outside world."""

    conn: asyncpg.Connection
    deps: MeetingsDeps

    @property
    def graph(self) -> GraphClient:
        return self.deps.graph

    async def publish(self, answer: Envelope) -> None:
        await publish_event(self.deps.publisher, self.deps.topics.meetings, answer)

    async def complete(self, event: AppointmentEvent, meeting: Meeting) -> None:
        """Mark `event` processed and store its effect, together (the attendance report's due
        time follows the meeting: moved with it, dropped when it is cancelled or failed)."""
        async with store.completing(self.conn, event) as first:
            if first:
                await store.save(self.conn, meeting)
                await store.schedule_attendance(
                    self.conn,
                    meeting.appointment_id,
                    event.correlation_id,
                    self.deps.attendance_grace,
                )


async def handle_event(event: AppointmentEvent, deps: MeetingsDeps) -> None:
    async with store.LOCKS.session(deps.pool, event.appointment_id) as conn:
        await handle_locked(conn, deps, event)


async def handle_locked(
    conn: asyncpg.Connection, deps: MeetingsDeps, event: AppointmentEvent
) -> None:
    """`event`, on a connection that holds its appointment's lock (see `batch` for events
    handled together)."""
    handling = _Handling(conn, deps)
    if isinstance(event, PersonalDataErasureRequested):
        await erasure.erase(conn, deps, event)
        return
    if await is_erased(conn, event.appointment_id):
        # Erased: a replayed or late event makes no meeting and keeps nothing.
        async with store.completing(conn, event):
            pass
        log.info("meetings: %s of an erased appointment skipped", event.event_type)
        return
    await _apply_held(handling, event)
    if await store.is_processed(conn, event.event_id):
        log.info("meetings: %s %s already handled", event.event_type, event.event_id)
        return
    meeting = await store.get_meeting(conn, event.appointment_id)
    if isinstance(event, AppointmentRequested):
        await _on_requested(handling, event, meeting)
        await _apply_held(handling, event)
    elif meeting is None:
        await store.hold(conn, event)
        log.info(
            "meetings: %s held until appointment %s is known",
            event.event_type,
            event.appointment_id,
            extra=context(event),
        )
    else:
        await _apply(handling, event, meeting)


async def _apply_held(handling: _Handling, cause: AppointmentEvent) -> None:
    """Apply the appointment's held events, in order. One that fails stays held and fails the
    event at hand with it (retried, or dead-lettered saying which held event needs an
    operator): replaying that event once the cause is fixed applies both, in order."""
    meeting = await store.get_meeting(handling.conn, cause.appointment_id)
    if meeting is None:
        return
    for held in await store.held(handling.conn, cause.appointment_id):
        log.info("meetings: applying held %s", held.event_type, extra=context(held))
        try:
            await _apply(handling, held, meeting)
        except NeedsOperator as exc:
            raise NeedsOperator(f"held {held.event_type} {held.event_id}: {exc}") from exc
        meeting = await store.get_meeting(handling.conn, cause.appointment_id) or meeting


async def _apply(handling: _Handling, event: AppointmentEvent, meeting: Meeting) -> None:
    match event:
        case AppointmentRescheduled():
            await _on_rescheduled(handling, event, meeting)
        case AppointmentCancelled():
            await _on_cancelled(handling, event, meeting)
        case AdvisorReassigned():
            await _on_reassigned(handling, event, meeting)
        case RecordingConsentWithdrawn():
            await _on_withdrawn(handling, event, meeting)
        case ContactCorrected():
            await _on_corrected(handling, event, meeting)
        case _:
            await handling.complete(event, meeting)


# --- a new meeting ------------------------------------------------------------------------


async def _on_requested(
    handling: _Handling, event: AppointmentRequested, meeting: Meeting | None
) -> None:
    if meeting is not None and meeting.status != "failed":
        # Answered already (or cancelled since): a second answer to another request for the
        # same appointment would mean a second confirmation email.
        await handling.complete(event, meeting)
        return
    appointment_id = event.appointment_id
    withdrawn = await store.holds(handling.conn, appointment_id, "RecordingConsentWithdrawn")
    spec = handling.deps.spec(event, withdrawn=withdrawn)
    if await store.holds(handling.conn, appointment_id, "AppointmentCancelled"):
        # Cancelled before its meeting could be made (the request waited in the dead-letter
        # topic): making one only to cancel it would mail the person twice for nothing.
        await handling.complete(event, row_of(spec, event.revision, "cancelled"))
        return
    if defects.on("MEETINGS_REFUSE_ALL"):  # tests of the proofs only: never in production
        await _fail(handling, event, refused_by_defect(), row_of(spec, event.revision, "failed"))
        return
    await _make_meeting(handling, event, spec)


async def _make_meeting(handling: _Handling, cause: AppointmentEvent, spec: MeetingSpec) -> None:
    try:
        created = await handling.deps.make_meeting(spec)
    except GraphRefused as refused:
        await _fail(handling, cause, refused, refused_row(spec, cause, refused))
        return
    answer, row = made(cause, spec, created)
    await handling.publish(answer)
    await handling.complete(cause, row)


async def _fail(
    handling: _Handling, cause: AppointmentEvent, refused: GraphRefused, meeting: Meeting
) -> None:
    answer, row = failed(cause, refused, meeting)
    await handling.publish(answer)
    await handling.complete(cause, row)


# --- changes ------------------------------------------------------------------------------


async def _on_rescheduled(
    handling: _Handling, event: AppointmentRescheduled, meeting: Meeting
) -> None:
    moved = replace(
        meeting,
        revision=max(meeting.revision, event.revision),
        start_at=event.start,
        duration_minutes=event.duration_minutes,
        timezone=event.timezone,
    )
    if meeting.status != "ready" or meeting.graph_event_id is None:
        # No meeting to move: the schedule is kept for one a change of advisor would make.
        await handling.complete(event, moved)
        return
    if defects.on("RESCHEDULE_NEW_MEETING"):  # tests of the proofs only: a second meeting
        spec = handling.deps.respec(moved, meeting.advisor_id, event.revision)
        await _make_meeting(handling, event, spec)
        return
    try:
        await handling.graph.move_event(
            meeting.advisor_id,
            meeting.graph_event_id,
            event.start,
            event.duration_minutes,
            event.timezone,
        )
    except GraphRefused as refused:
        await _fail(handling, event, refused, moved)
        return
    await handling.publish(answers.meeting_rescheduled(event, moved))
    await handling.complete(event, moved)


async def _on_cancelled(handling: _Handling, event: AppointmentCancelled, meeting: Meeting) -> None:
    cancelled = replace(meeting, status="cancelled", revision=max(meeting.revision, event.revision))
    if meeting.status == "cancelled" or meeting.graph_event_id is None:
        await handling.complete(event, cancelled)  # nothing in any calendar
        return
    try:
        await handling.graph.cancel_event(meeting.advisor_id, meeting.graph_event_id)
    except GraphRefused as refused:
        raise NeedsOperator(
            f"the cancelled appointment's Teams meeting is still in the advisor's calendar: "
            f"{refused.reason}: {refused.detail}"
        ) from refused
    await handling.publish(answers.meeting_cancelled(event, meeting))
    await handling.complete(event, cancelled)


async def _on_reassigned(handling: _Handling, event: AdvisorReassigned, meeting: Meeting) -> None:
    if meeting.status == "cancelled":
        await handling.complete(event, meeting)
        return
    if meeting.graph_event_id is not None:
        try:
            await handling.graph.cancel_event(meeting.advisor_id, meeting.graph_event_id)
        except GraphRefused as refused:
            # The person needs the new meeting more than the old calendar needs tidying.
            log.warning(
                "meetings: the previous advisor's event %s stays in their calendar: %s",
                meeting.graph_event_id,
                refused.detail,
                extra=context(event),
            )
    if meeting.start_at is None or meeting.duration_minutes is None:
        raise NeedsOperator(
            "this meeting predates the schedule being kept (migration 002): create the new "
            "meeting by hand, or re-emit the appointment's AppointmentRequested"
        )
    spec = handling.deps.respec(meeting, event.advisor.id, event.revision)
    await _make_meeting(handling, event, spec)


async def _on_withdrawn(
    handling: _Handling, event: RecordingConsentWithdrawn, meeting: Meeting
) -> None:
    off = replace(meeting, recording_authorised=False)
    if meeting.status == "ready" and meeting.recording_authorised and meeting.online_meeting_id:
        try:
            await handling.graph.update_meeting_options(
                meeting.advisor_id, meeting.online_meeting_id, recording_authorised=False
            )
        except GraphRefused as refused:
            raise NeedsOperator(
                f"recording is still allowed on the meeting: {refused.reason}: {refused.detail}"
            ) from refused
        log.info("meetings: recording turned off", extra=context(event))
        await _rewrite_note(handling, off, "no longer says recording is authorised")
    await handling.complete(event, off)


async def _on_corrected(handling: _Handling, event: ContactCorrected, meeting: Meeting) -> None:
    """The name the advisor admits and the device, as the person corrected them."""
    visitor = Visitor.of(event.user)
    corrected = replace(
        meeting,
        revision=max(meeting.revision, event.revision),
        first_name=visitor.first_name,
        last_initial=visitor.last_initial,
        device=visitor.device,
    )
    if corrected.visitor != meeting.visitor and meeting.status == "ready":
        await _rewrite_note(handling, corrected, "still shows the details before the correction")
    await handling.complete(event, corrected)


async def _rewrite_note(handling: _Handling, meeting: Meeting, stale: str) -> None:
    """The event's body written again from `meeting`, mailing no one."""
    if meeting.graph_event_id is None:
        return
    try:
        await rewrite_note(
            handling.graph,
            meeting.advisor_id,
            meeting.graph_event_id,
            handling.deps.note(meeting),
        )
    except GraphRefused as refused:
        raise NeedsOperator(
            f"the advisor's event {stale}: {refused.reason}: {refused.detail}"
        ) from refused
