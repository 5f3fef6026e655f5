"""Online meeting artifacts: attendance reports and recordings, as Graph serves them.

Teams makes these after a meeting ends, so nothing here is made by calling Graph: tests script
them through the control API (who joined when, and which recordings exist), including a report
that Graph does not list yet — for some list calls, or until the emulator clock passes a time —
as the real service answers an empty list for a while after the meeting.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from visio_fakes.graph_emulator.timezones import format_utc

# Who a participant is, as far as the tenant can tell; it decides the identity Graph reports.
ParticipantKind = Literal["organizer", "internal", "external", "anonymous"]
_ROLES: dict[ParticipantKind, str] = {
    "organizer": "Organizer",
    "internal": "Presenter",
    "external": "Attendee",
    "anonymous": "Attendee",
}
# A federated or guest user's home tenant: any tenant but the emulator's.
OTHER_TENANT_ID = "99999999-9999-4999-8999-000000000e47"


@dataclass(frozen=True)
class Interval:
    join: dt.datetime
    leave: dt.datetime

    def render(self) -> dict[str, Any]:
        return {
            "joinDateTime": format_utc(self.join),
            "leaveDateTime": format_utc(self.leave),
            "durationInSeconds": int((self.leave - self.join).total_seconds()),
        }


@dataclass(frozen=True)
class Attendee:
    kind: ParticipantKind
    identity_id: str
    display_name: str
    email: str | None
    tenant_id: str | None  # None: anonymous (joined from the link, no account)
    intervals: tuple[Interval, ...]

    def render(self) -> dict[str, Any]:
        return {
            "id": self.identity_id,
            "emailAddress": self.email,
            "totalAttendanceInSeconds": sum(
                int((i.leave - i.join).total_seconds()) for i in self.intervals
            ),
            "role": _ROLES[self.kind],
            "identity": {
                "id": self.identity_id,
                "displayName": self.display_name,
                "tenantId": self.tenant_id,
            },
            "attendanceIntervals": [i.render() for i in self.intervals],
        }


@dataclass
class Report:
    id: str
    attendees: list[Attendee]
    fallback_start: dt.datetime  # the meeting's schedule, when nobody joined at all
    fallback_end: dt.datetime
    hidden_list_calls: int = 0  # list calls still to answer without this report
    available_at: dt.datetime | None = None  # not listed before this (emulator clock)

    @property
    def start(self) -> dt.datetime:
        joins = [i.join for a in self.attendees for i in a.intervals]
        return min(joins, default=self.fallback_start)

    @property
    def end(self) -> dt.datetime:
        leaves = [i.leave for a in self.attendees for i in a.intervals]
        return max(leaves, default=self.fallback_end)

    def render(self, *, with_records: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "totalParticipantCount": len(self.attendees),
            "meetingStartDateTime": format_utc(self.start),
            "meetingEndDateTime": format_utc(self.end),
        }
        if with_records:
            body["attendanceRecords"] = [a.render() for a in self.attendees]
        return body


@dataclass(frozen=True)
class Recording:
    id: str
    meeting_id: str
    organizer_oid: str
    tenant_id: str
    created: dt.datetime
    ended: dt.datetime
    content_correlation_id: str

    def render(self, content_url: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "meetingId": self.meeting_id,
            "callId": str(uuid.uuid5(uuid.NAMESPACE_URL, self.meeting_id)),
            "meetingOrganizer": {
                "application": None,
                "device": None,
                "user": {
                    "id": self.organizer_oid,
                    "displayName": None,
                    "userIdentityType": "aadUser",
                    "tenantId": self.tenant_id,
                },
            },
            "createdDateTime": format_utc(self.created),
            "endDateTime": format_utc(self.ended),
            "contentCorrelationId": self.content_correlation_id,
            "recordingContentUrl": content_url,
        }


@dataclass
class Artifacts:
    """Per online meeting id: its attendance reports and its recordings."""

    reports: dict[str, list[Report]] = field(default_factory=dict)
    recordings: dict[str, list[Recording]] = field(default_factory=dict)

    def list_reports(self, meeting_id: str, now: dt.datetime) -> list[Report]:
        """What a list call sees now; each call counts down a report's hidden calls."""
        listed = []
        for report in self.reports.get(meeting_id, []):
            if report.available_at is not None and now < report.available_at:
                continue
            if report.hidden_list_calls > 0:
                report.hidden_list_calls -= 1
                continue
            listed.append(report)
        return listed

    def report(self, meeting_id: str, report_id: str) -> Report | None:
        return next((r for r in self.reports.get(meeting_id, []) if r.id == report_id), None)

    def recording(self, meeting_id: str, recording_id: str) -> Recording | None:
        found = self.recordings.get(meeting_id, [])
        return next((r for r in found if r.id == recording_id), None)
