"""Which email a state calls for, whatever order the events came in: the decision table."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from visio_notifications.decide import (
    LinkRequest,
    Owed,
    State,
    Told,
    consents_only,
    owed,
    recipient_sha256,
    unanswerable,
)

NEW_URL = "https://teams.microsoft.com/meet/2647813459?p=NewAdvisorLink"
ASKED_AT = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def _request(reason: str = "resend") -> LinkRequest:
    return LinkRequest(uuid.uuid4(), reason, ASKED_AT)


@pytest.fixture
def story(make):
    """An appointment, its meeting, and what a confirmation told about them."""
    appointment = make.appointment()
    meeting = make.meeting(appointment)
    told = Told(
        kind="confirmation",
        revision=1,
        status="sent",
        recipient_sha256=recipient_sha256(str(appointment.user.email)),
        device=str(appointment.user.device),
        start_at=appointment.start,
        duration_minutes=appointment.duration_minutes,
        join_url=meeting.join_url,
    )
    return appointment, meeting, told


def _state(
    appointment, meeting=None, history=(), cancellation=None, advisor_revision=1, requests=()
):
    return State(
        appointment, advisor_revision, cancellation, meeting, tuple(history), tuple(requests)
    )


def test_nothing_until_both_halves_are_there(story) -> None:
    appointment, meeting, _ = story
    assert owed(_state(None, meeting)) is None
    assert owed(_state(appointment, None)) is None
    assert owed(_state(appointment, meeting)) == Owed("confirmation", 1)


def test_nothing_more_once_told(story) -> None:
    appointment, meeting, told = story
    assert owed(_state(appointment, meeting, [told])) is None


def test_a_new_time_is_announced_with_what_was_told_before(story) -> None:
    appointment, meeting, told = story
    moved = appointment.model_copy(
        update={"revision": 2, "start": appointment.start + timedelta(days=1)}
    )
    assert owed(_state(moved, meeting, [told])) == Owed("rescheduled", 2, previous=told)
    # Moved and moved back before anyone was told: nothing to say.
    back = appointment.model_copy(update={"revision": 3})
    assert owed(_state(back, meeting, [told])) is None


def test_a_reschedule_before_the_confirmation_just_confirms_the_new_time(story) -> None:
    appointment, meeting, _ = story
    moved = appointment.model_copy(
        update={"revision": 2, "start": appointment.start + timedelta(days=1)}
    )
    assert owed(_state(moved, meeting)) == Owed("confirmation", 2)


def test_a_corrected_address_gets_the_confirmation_again(story, make) -> None:
    appointment, meeting, told = story
    corrected = make.contact_corrected(appointment, 2, "amina.h@example.net")
    changed = appointment.model_copy(update={"revision": 2, "user": corrected.user})
    assert owed(_state(changed, meeting, [told])) == Owed("contact_corrected", 2, previous=told)


def test_a_new_advisor_waits_for_the_new_link(story, make) -> None:
    appointment, meeting, told = story
    reassigned = make.reassigned(appointment, 2)
    changed = appointment.model_copy(update={"revision": 2, "advisor": reassigned.advisor})
    # The old meeting (revision 1) is the previous advisor's: no link to send yet.
    assert owed(_state(changed, meeting, [told], advisor_revision=2)) is None
    new_meeting = make.meeting(changed, revision=2, join_url=NEW_URL)
    assert owed(_state(changed, new_meeting, [told], advisor_revision=2)) == Owed(
        "advisor_changed", 2, previous=told
    )


def test_a_meeting_newer_than_the_appointment_waits_for_its_change(story, make) -> None:
    appointment, _, told = story
    # The new advisor's meeting came before the AdvisorReassigned that asked for it.
    early = make.meeting(appointment, revision=2, join_url=NEW_URL)
    assert owed(_state(appointment, early, [told])) is None
    assert owed(_state(appointment, make.meeting_failed(appointment, revision=2), [told])) is None


def test_a_failed_meeting_is_said_once(story, make) -> None:
    appointment, _, told = story
    failed = make.meeting_failed(appointment)
    assert owed(_state(appointment, failed)) == Owed("meeting_unavailable", 1)
    said = replace(told, kind="meeting_unavailable", join_url=None)
    assert owed(_state(appointment, failed, [said])) is None


def test_a_cancellation_wins_over_everything_and_is_said_once(story, make) -> None:
    appointment, meeting, told = story
    cancelled = make.cancelled(appointment, 2)
    state = _state(appointment, meeting, [told], cancellation=cancelled)
    assert owed(state) == Owed("cancellation", 2)
    said = replace(told, kind="cancellation", revision=2)
    assert owed(replace(state, history=(told, said))) is None


def test_an_address_that_bounced_is_not_tried_again_until_corrected(story, make) -> None:
    appointment, meeting, told = story
    bounced = replace(told, status="failed")
    moved = appointment.model_copy(
        update={"revision": 2, "start": appointment.start + timedelta(hours=2)}
    )
    assert owed(_state(moved, meeting, [bounced])) is None
    corrected = make.contact_corrected(appointment, 3, "amina.h@example.net")
    fixed = moved.model_copy(update={"revision": 3, "user": corrected.user})
    # Never told anything: it is the first confirmation, to the corrected address.
    assert owed(_state(fixed, meeting, [bounced])) == Owed("confirmation", 3)


def test_up_to_date_means_told_the_current_time_and_link(story) -> None:
    appointment, meeting, told = story
    assert _state(appointment, meeting, [told]).up_to_date()
    assert not _state(appointment, meeting).up_to_date()
    moved = appointment.model_copy(update={"start": appointment.start + timedelta(hours=1)})
    assert not _state(moved, meeting, [told]).up_to_date()


# --- Requests for the email again -----------------------------------------------------------


def test_each_request_is_owed_one_email_after_what_the_state_calls_for(story) -> None:
    appointment, meeting, told = story
    first, second = _request("resend"), _request("fresh_link")
    # The confirmation first, then the requests, oldest first.
    assert owed(_state(appointment, meeting, requests=[first])) == Owed("confirmation", 1)
    state = _state(appointment, meeting, [told], requests=[first, second])
    assert owed(state) == Owed("link_resent", 1, request=first)
    answered = replace(told, kind="link_resent", request_id=first.event_id)
    assert owed(replace(state, history=(told, answered))) == Owed("link_resent", 1, request=second)
    # Both at the same revision, both answered: nothing more.
    both = (told, answered, replace(answered, request_id=second.event_id))
    assert owed(replace(state, history=both)) is None


def test_a_request_before_the_meeting_is_ready_is_still_answered(story) -> None:
    appointment, _, _ = story
    request = _request("resend")
    assert owed(_state(appointment, None, requests=[request])) == Owed(
        "link_resent", 1, request=request
    )


def test_a_request_never_changes_what_the_state_calls_for(story) -> None:
    appointment, meeting, told = story
    answered = replace(told, kind="link_resent", request_id=uuid.uuid4())
    moved = appointment.model_copy(
        update={"revision": 2, "start": appointment.start + timedelta(days=1)}
    )
    # The link_resent told the new time, yet the rescheduled email (and its .ics) is owed.
    assert owed(_state(moved, meeting, [told, replace(answered, start_at=moved.start)])) == Owed(
        "rescheduled", 2, previous=told
    )


def test_why_a_request_gets_no_email(story, make) -> None:
    appointment, meeting, told = story
    request = _request("resend")
    before = appointment.start - timedelta(days=1)
    assert (
        unanswerable(_state(appointment, meeting, [told], requests=[request]), request, before)
        is None
    )
    assert unanswerable(_state(None, meeting, requests=[request]), request, before) == (
        "appointment_unknown"
    )
    cancelled = _state(
        appointment, meeting, [told], make.cancelled(appointment, 2), requests=[request]
    )
    assert unanswerable(cancelled, request, before) == "appointment_cancelled"
    assert (
        owed(replace(cancelled, history=(told, replace(told, kind="cancellation", revision=2))))
        is None
    )
    during = appointment.start + timedelta(minutes=10)  # lost the link mid-appointment: sent
    state = _state(appointment, meeting, [told], requests=[request])
    assert unanswerable(state, request, during) is None
    assert consents_only(state, request, during) is None
    after = appointment.start + timedelta(minutes=appointment.duration_minutes)
    assert unanswerable(state, request, after) == "appointment_over"


def test_a_fresh_link_after_the_appointment_carries_the_consents_alone(story, make) -> None:
    appointment, meeting, told = story
    request = _request("fresh_link")
    state = _state(appointment, meeting, [told], requests=[request])
    before = appointment.start - timedelta(days=1)
    during = appointment.start + timedelta(minutes=10)
    after = appointment.start + timedelta(days=200)
    assert [consents_only(state, request, now) for now in (before, during, after)] == [
        None,
        None,
        "over",
    ]
    assert unanswerable(state, request, after) is None
    assert owed(state) == Owed("link_resent", 1, request=request)

    said = replace(told, kind="cancellation", revision=2)
    cancelled = _state(
        appointment.model_copy(update={"revision": 2}),
        meeting,
        [told, said],
        make.cancelled(appointment, 2),
        requests=[request],
    )
    assert unanswerable(cancelled, request, before) is None
    assert consents_only(cancelled, request, before) == "cancelled"
    # Signed for the appointment as it stands: the cancellation's revision.
    assert owed(cancelled) == Owed("link_resent", 2, request=request)
    # Unknown here (never, or forgotten past its retention): nobody to write to.
    assert unanswerable(_state(None, meeting, requests=[request]), request, after) == (
        "appointment_unknown"
    )
