"""A meeting's row, from what was asked of Graph (`MeetingSpec`) and what it made."""

from __future__ import annotations

from visio_meetings.meeting import Created
from visio_meetings.payloads import MeetingSpec
from visio_meetings.store import Meeting


def row_of(
    spec: MeetingSpec,
    revision: int,
    status: str,
    *,
    created: Created | None = None,
    graph_event_id: str | None = None,
) -> Meeting:
    """The meeting row `spec` makes, as it stands after `status`."""
    return Meeting(
        appointment_id=spec.appointment_id,
        revision=revision,
        advisor_id=spec.advisor_id,
        transaction_id=spec.key,
        status=status,
        failure_reason=None,
        subject=spec.subject,
        start_at=spec.start,
        duration_minutes=spec.duration_minutes,
        timezone=spec.timezone,
        recording_authorised=spec.recording_authorised,
        graph_event_id=created.graph_event_id if created else graph_event_id,
        online_meeting_id=created.online_meeting_id if created else None,
        join_url=created.join_url if created else None,
        join_meeting_id=created.join_meeting_id if created else None,
        passcode=created.passcode if created else None,
        conference_id=created.conference_id if created else None,
        dial_in_url=created.dial_in_url if created else None,
        first_name=spec.visitor.first_name if spec.visitor else None,
        last_initial=spec.visitor.last_initial if spec.visitor else None,
        device=spec.visitor.device if spec.visitor else None,
    )
