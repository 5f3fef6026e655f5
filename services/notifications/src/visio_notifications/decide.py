"""Which email a person is owed, decided from state alone: the appointment as it stands, the
latest word from meetings, and the log of what was already mailed.

Deciding from state rather than from the event that just arrived makes the order of arrival
irrelevant (the appointment and its meeting travel on two topics) and makes every decision
safe to take twice: what was mailed is in the log, so a redelivered event, a re-emitted
MeetingReady or the poller's retry finds nothing more to send.

A person's request for the email again (AppointmentLinkRequested) is part of the state too:
each pending request is owed one `link_resent` email, logged under the request's own id, after
whatever the appointment's state calls for. Once the appointment has ended (past its end, or
cancelled), only a fresh link is still answered, and with « Mes consentements » alone: the right
of access outlives the appointment, its join link and its other pages do not.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from visio_shared import AppointmentCancelled, AppointmentRequested, MeetingFailed, MeetingReady

# Emails that carry the join link and the time: after one of them, the person knows both.
LINK_KINDS = frozenset({"confirmation", "contact_corrected", "advisor_changed", "rescheduled"})


def recipient_sha256(address: str) -> str:
    """Which address an email went to, comparable later, without keeping the address."""
    return hashlib.sha256(address.strip().lower().encode()).hexdigest()


def number_sha256(number: str) -> str:
    """Which mobile (E.164) a text went to, comparable later, without keeping the number."""
    return hashlib.sha256(number.encode()).hexdigest()


@dataclass(frozen=True)
class Told:
    """One row of the dispatch log: what an email told the person (or would have, if failed)."""

    kind: str
    revision: int
    status: str  # 'sent' | 'failed'
    recipient_sha256: str
    reminder_offset_minutes: int | None = None
    device: str | None = None
    start_at: datetime | None = None
    duration_minutes: int | None = None
    join_url: str | None = None
    request_id: uuid.UUID | None = None  # link_resent: the request it answered


@dataclass(frozen=True)
class LinkRequest:
    """A request for the email again, not answered yet."""

    event_id: uuid.UUID
    reason: str  # 'resend' | 'fresh_link'
    requested_at: datetime


@dataclass(frozen=True)
class State:
    """Everything notifications knows about one appointment."""

    appointment: AppointmentRequested | None  # as it stands, every change applied
    advisor_revision: int  # the revision that gave the appointment its current advisor
    cancellation: AppointmentCancelled | None
    meeting: MeetingReady | MeetingFailed | None  # meetings' latest word
    history: tuple[Told, ...]  # the dispatch log, oldest first
    link_requests: tuple[LinkRequest, ...] = ()  # pending, oldest first
    # A text to the mobile the appointment holds now failed for good (its next email says so).
    number_failed: bool = False
    # Texts waiting to be sent (some may be about a time the appointment no longer has). Unknown
    # is taken as yes: only `store.load_state` says no, having looked.
    texts_pending: bool = True
    # The event the next outcome is caused by: the one that asked for settling, else the
    # latest appointment event (None while the appointment is unknown).
    cause: uuid.UUID | None = None

    def with_email(self, told: Told, answered: LinkRequest | None = None) -> State:
        """The state once this email is in the log, and the request it answers closed: what
        reading it again would give, to whoever holds the appointment's lock (saves settling a
        second read of the whole state per email)."""
        return replace(
            self,
            history=(*self.history, told),
            link_requests=tuple(r for r in self.link_requests if r != answered),
        )

    @property
    def current_meeting(self) -> MeetingReady | MeetingFailed | None:
        """Meetings' word on the current advisor's meeting. An older one is about the meeting
        cancelled when the advisor changed; a newer one answers a change of the appointment
        that has not reached us yet (another topic): both wait."""
        meeting = self.meeting
        if meeting is None or meeting.revision < self.advisor_revision:
            return None
        if self.appointment is not None and meeting.revision > self.appointment.revision:
            return None
        return meeting

    @property
    def link(self) -> MeetingReady | None:
        meeting = self.current_meeting
        return meeting if isinstance(meeting, MeetingReady) else None

    def logged(self, kind: str, revision: int, offset: int | None = None) -> bool:
        return any(
            (told.kind, told.revision, told.reminder_offset_minutes) == (kind, revision, offset)
            for told in self.history
        )

    def answered(self, request: LinkRequest) -> bool:
        return any(told.request_id == request.event_id for told in self.history)

    def last_link_email(self, *, sent_only: bool = False) -> Told | None:
        for told in reversed(self.history):
            if told.kind in LINK_KINDS and (told.status == "sent" or not sent_only):
                return told
        return None

    def up_to_date(self) -> bool:
        """The person holds the current time and link: reminders make sense."""
        if self.appointment is None or self.cancellation is not None or self.link is None:
            return False
        last = self.last_link_email()
        return last is not None and last.status == "sent" and _link_change(self, last) is None


@dataclass(frozen=True)
class Owed:
    kind: str
    revision: int
    previous: Told | None = None  # what the person was told before, for « ce qui change »
    request: LinkRequest | None = None  # link_resent: the request it answers


def appointment_end(appointment: AppointmentRequested) -> datetime:
    return appointment.start + timedelta(minutes=appointment.duration_minutes)


def appointment_over(appointment: AppointmentRequested, now: datetime) -> bool:
    """Past its end, an email about the appointment would only confuse."""
    return now >= appointment_end(appointment)


def owed(state: State) -> Owed | None:
    """The email this state calls for, if any (one at a time; ask again after sending): what
    the appointment's state calls for first, then the link requests, oldest first."""
    return _owed_by_appointment(state) or _owed_by_request(state)


def ended(state: State, now: datetime) -> str | None:
    """'cancelled' or 'over' once the appointment can no longer be joined; None until its end."""
    if state.cancellation is not None:
        return "cancelled"
    if state.appointment is not None and appointment_over(state.appointment, now):
        return "over"
    return None


def unanswerable(state: State, request: LinkRequest, now: datetime) -> str | None:
    """Why this link request gets no email, if it gets none: the appointment is not known here
    (never was, or forgotten), or, for the email again, it is cancelled or over. A fresh link
    is answered whatever became of the appointment (`consents_only`)."""
    if state.appointment is None:
        return "appointment_unknown"
    if request.reason == "fresh_link":
        return None
    why = ended(state, now)
    return None if why is None else f"appointment_{why}"


def consents_only(state: State, request: LinkRequest | None, now: datetime) -> str | None:
    """'cancelled' or 'over' when a link_resent answers a fresh link asked for after the
    appointment: it then carries « Mes consentements » alone, nothing to join or to manage."""
    if request is None or request.reason != "fresh_link":
        return None
    return ended(state, now)


def _owed_by_request(state: State) -> Owed | None:
    appointment = state.appointment
    if appointment is None:
        return None
    for request in state.link_requests:
        if state.answered(request):
            continue
        if state.cancellation is not None and request.reason != "fresh_link":
            continue  # nothing to send again (`unanswerable` closes it)
        # Signed for, and showing, the appointment as it stands.
        return Owed("link_resent", appointment.revision, request=request)
    return None


def _owed_by_appointment(state: State) -> Owed | None:
    appointment = state.appointment
    if appointment is None:
        return None  # the meeting arrived first: wait for the appointment
    if state.cancellation is not None:
        wanted = Owed("cancellation", state.cancellation.revision)
    elif isinstance(state.current_meeting, MeetingFailed):
        wanted = Owed("meeting_unavailable", state.current_meeting.revision)
    elif state.link is None:
        return None  # no link yet for the current advisor
    else:
        link_owed = _link_email(state)
        if link_owed is None:
            return None
        wanted = link_owed
    return None if state.logged(wanted.kind, wanted.revision) else wanted


def _link_email(state: State) -> Owed | None:
    assert state.appointment is not None
    revision = state.appointment.revision
    last = state.last_link_email()
    if last is not None and last.status == "failed" and _same_target(state, last):
        # It failed for good to this address with this link: resending would fail alike.
        # A corrected address or a new link is what it waits for.
        return None
    told = state.last_link_email(sent_only=True)
    if told is None:
        return Owed("confirmation", revision)
    change = _link_change(state, told)
    return None if change is None else Owed(change, revision, previous=told)


def _link_change(state: State, told: Told) -> str | None:
    """What changed since `told`, most important first: a new address gets the whole
    confirmation; a new link replaces the old; a new time is announced."""
    appointment, link = state.appointment, state.link
    assert appointment is not None and link is not None
    user = appointment.user
    if told.recipient_sha256 != recipient_sha256(str(user.email)) or told.device != user.device:
        return "contact_corrected"
    if told.join_url != link.join_url:
        return "advisor_changed"
    if told.start_at != appointment.start or told.duration_minutes != appointment.duration_minutes:
        return "rescheduled"
    return None


def _same_target(state: State, told: Told) -> bool:
    assert state.appointment is not None and state.link is not None
    return (
        told.recipient_sha256 == recipient_sha256(str(state.appointment.user.email))
        and told.join_url == state.link.join_url
    )
