"""What meetings says on `meetings.v1`, and under which event ids.

An answer is published before the handling commits; a crash in between redelivers the cause,
whose handling publishes again. The answer's event_id is derived from its cause's, so that
repeat is the very same event, which consumers skip by event_id.
"""

from __future__ import annotations

import uuid

from visio_shared import (
    AppointmentEvent,
    Envelope,
    MeetingCancelled,
    MeetingFailed,
    MeetingReady,
    MeetingRescheduled,
)

from visio_meetings.meeting import Created
from visio_meetings.refusals import GraphRefused
from visio_meetings.store import Meeting

_ANSWER_NAMESPACE = uuid.UUID("0b6a1f7e-3c55-4f57-9a59-6c1d1b8f4e21")


def answer_id(cause: Envelope, event_type: str) -> uuid.UUID:
    """The event_id of our answer to `cause`: the same on every redelivery of `cause`."""
    return uuid.uuid5(_ANSWER_NAMESPACE, f"{cause.event_id}/{event_type}")


def meeting_ready(cause: AppointmentEvent, advisor_id: str, created: Created) -> MeetingReady:
    return MeetingReady(
        event_id=answer_id(cause, "MeetingReady"),
        join_url=created.join_url,
        graph_event_id=created.graph_event_id,
        online_meeting_id=created.online_meeting_id,
        advisor_id=advisor_id,
        conference_id=created.conference_id,
        dial_in_url=created.dial_in_url,
        toll_number=created.toll_number,
        toll_free_number=created.toll_free_number,
        join_meeting_id=created.join_meeting_id,
        passcode=created.passcode,
        **cause.caused(appointment_id=cause.appointment_id, revision=cause.revision),
    )


def meeting_rescheduled(cause: AppointmentEvent, meeting: Meeting) -> MeetingRescheduled:
    assert meeting.graph_event_id is not None and meeting.join_url is not None
    return MeetingRescheduled(
        event_id=answer_id(cause, "MeetingRescheduled"),
        graph_event_id=meeting.graph_event_id,
        join_url=meeting.join_url,
        **cause.caused(appointment_id=cause.appointment_id, revision=cause.revision),
    )


def meeting_cancelled(cause: AppointmentEvent, meeting: Meeting) -> MeetingCancelled:
    assert meeting.graph_event_id is not None
    return MeetingCancelled(
        event_id=answer_id(cause, "MeetingCancelled"),
        graph_event_id=meeting.graph_event_id,
        advisor_id=meeting.advisor_id,
        **cause.caused(appointment_id=cause.appointment_id, revision=cause.revision),
    )


def meeting_failed(cause: AppointmentEvent, refused: GraphRefused) -> MeetingFailed:
    return MeetingFailed(
        event_id=answer_id(cause, "MeetingFailed"),
        reason=refused.reason,
        detail=refused.detail,
        **cause.caused(appointment_id=cause.appointment_id, revision=cause.revision),
    )
