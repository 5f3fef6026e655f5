"""Graph's attendance reports and recordings, turned into meetings' events.

Roles, as the record of connections needs them (never a name or an address, which stay in
Graph): the organizer is the advisor; a participant from outside the tenant — anonymous (joined
from the link, no account), a guest or another organisation's user — is the member of the
public; a user of the tenant who is not the organizer (a colleague, a supervisor) is `other`.
Graph leaves `identity.tenantId` empty for anonymous users, so an empty tenant counts as
outside.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

# From the module: the package's __init__ does not re-export these (yet).
from visio_shared.events import (
    AttendanceInterval,
    MeetingAttendanceRecorded,
    MeetingAttendanceUnavailable,
    MeetingRecordingAvailable,
    ParticipantAttendance,
)

from visio_meetings.store import AttendanceDue

Role = Literal["organizer", "public", "other"]

# Event ids derived from the meeting (and recording), so publishing again after a crash
# between publish and commit repeats the same event, which consumers skip by event_id.
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:visio-rdv:meetings:after-the-meeting")


def _event_id(due: AttendanceDue, what: str) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"{due.appointment_id}/{due.online_meeting_id}/{what}")


def _lineage(due: AttendanceDue, what: str) -> dict[str, Any]:
    return {
        "event_id": _event_id(due, what),
        "correlation_id": due.correlation_id,
        "appointment_id": due.appointment_id,
        "revision": due.revision,
        "online_meeting_id": due.online_meeting_id,
    }


def role_of(record: dict[str, Any], advisor_id: str, tenant_id: str) -> Role:
    identity = record.get("identity") or {}
    if (
        record.get("role") == "Organizer"
        or str(identity.get("id", "")).lower() == advisor_id.lower()
    ):
        return "organizer"
    home = identity.get("tenantId")
    if home and str(home).lower() == tenant_id.lower():
        return "other"
    return "public"


def participant(record: dict[str, Any], advisor_id: str, tenant_id: str) -> ParticipantAttendance:
    intervals = [
        AttendanceInterval(
            joined_at=_instant(i["joinDateTime"]),
            left_at=_instant(i["leaveDateTime"]),
            duration_seconds=int(i.get("durationInSeconds") or 0),
        )
        for i in record.get("attendanceIntervals") or []
        # Graph sets a time to null when it lacks the data: such an interval proves nothing.
        if i.get("joinDateTime") and i.get("leaveDateTime")
    ]
    return ParticipantAttendance(
        role=role_of(record, advisor_id, tenant_id),
        total_attendance_seconds=int(record.get("totalAttendanceInSeconds") or 0),
        intervals=intervals,
    )


def attendance_recorded(
    due: AttendanceDue, reports: list[dict[str, Any]], tenant_id: str
) -> MeetingAttendanceRecorded:
    """One event for the meeting: a meeting left and joined again has a report per session,
    so their records are put together (the person attended if they joined any session)."""
    participants = [
        participant(record, due.advisor_id, tenant_id)
        for report in reports
        for record in report.get("attendanceRecords") or []
    ]
    return MeetingAttendanceRecorded(
        **_lineage(due, "attendance"),
        report_id=",".join(str(report["id"]) for report in reports),
        meeting_start=min(_instant(r["meetingStartDateTime"]) for r in reports),
        meeting_end=max(_instant(r["meetingEndDateTime"]) for r in reports),
        participants=participants,
        public_attended=any(p.role == "public" and p.intervals for p in participants),
    )


def attendance_unavailable(due: AttendanceDue, reason: str) -> MeetingAttendanceUnavailable:
    return MeetingAttendanceUnavailable(**_lineage(due, "attendance"), reason=reason)


def recording_available(due: AttendanceDue, recording: dict[str, Any]) -> MeetingRecordingAvailable:
    return MeetingRecordingAvailable(
        **_lineage(due, f"recording/{recording['id']}"),
        recording_id=str(recording["id"]),
        created_at=_instant(recording["createdDateTime"]),
        content_correlation_id=recording.get("contentCorrelationId"),
    )


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value)
