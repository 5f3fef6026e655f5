"""A meeting made or refused for good: the answer to publish on `meetings.v1` and the row it
leaves — the same whether the meeting was made alone (`handlers`) or with a batch's
(`batch`)."""

from __future__ import annotations

import logging
from dataclasses import replace

from visio_shared import AppointmentEvent, Envelope

from visio_meetings import answers
from visio_meetings.meeting import Created
from visio_meetings.payloads import MeetingSpec
from visio_meetings.refusals import GraphRefused
from visio_meetings.rows import row_of
from visio_meetings.store import Meeting

log = logging.getLogger(__name__)


def refused_by_defect() -> GraphRefused:
    return GraphRefused("ErrorAccessDenied", "defect: every appointment refused", status=403)


def made(cause: AppointmentEvent, spec: MeetingSpec, created: Created) -> tuple[Envelope, Meeting]:
    """The meeting is ready: the answer to publish, and its row."""
    log.info(
        "meetings: meeting ready for appointment %s (recording %s)",
        spec.appointment_id,
        "allowed" if spec.recording_authorised else "off",
        extra=context(cause),
    )
    answer = answers.meeting_ready(cause, spec.advisor_id, created)
    return answer, row_of(spec, cause.revision, "ready", created=created)


def refused_row(spec: MeetingSpec, cause: AppointmentEvent, refused: GraphRefused) -> Meeting:
    """The row of a meeting Graph refused to make (with the event, if it was made)."""
    return row_of(spec, cause.revision, "failed", graph_event_id=refused.graph_event_id)


def failed(
    cause: AppointmentEvent, refused: GraphRefused, meeting: Meeting
) -> tuple[Envelope, Meeting]:
    """Graph refused for good: the answer that says so, so booking and the person are not
    left waiting, and the row it leaves."""
    log.warning(
        "meetings: Graph refused %s of appointment %s: %s (%s %s)",
        cause.event_type,
        cause.appointment_id,
        refused.reason,
        refused.status,
        refused.code,
        extra=context(cause),
    )
    answer = answers.meeting_failed(cause, refused)
    reason = f"{answer.reason}: {answer.detail}"
    return answer, replace(meeting, status="failed", failure_reason=reason)


def context(event: Envelope) -> dict[str, str]:
    return {"correlation_id": str(event.correlation_id)}
