"""What meetings sends to Graph: the calendar event and its times, the meeting options, the
OData filters, and the keys that make every creation idempotent."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from visio_meetings.advisor_note import AdvisorNote, Visitor, advisor_page, note_html

# Booking on the local stack: MEETINGS_BOOKING_PUBLIC_URL's default.
LOCAL_BOOKING_URL = "http://127.0.0.1:8080"

TRANSACTION_NAMESPACE = uuid.UUID("5227ffaa-4f52-40bd-8199-bb9095993d54")
_PROPERTY_SET = "{eb93a35d-1aac-41ef-9eaa-038cfa09ce2b}"
# Every event of an appointment carries its id (what ops and the emulator count per
# appointment), and the key of the creation that made it (what the look-up before a create
# searches: after a change of advisor, the new event must not be taken for the old one).
APPOINTMENT_PROPERTY_ID = f"String {_PROPERTY_SET} Name VisioRdvAppointmentId"
MEETING_KEY_PROPERTY_ID = f"String {_PROPERTY_SET} Name VisioRdvMeetingKey"

# Graph takes every Windows zone name but only some IANA ones (Indian/Reunion is not among
# them), so the appointment's IANA zone is sent as its Windows name (CLDR windowsZones): the
# advisor's Outlook then shows the zone the appointment was booked in. A zone missing here is
# sent in UTC, which Graph always takes; Outlook converts it to the advisor's zone anyway.
WINDOWS_ZONES = {
    "Europe/Paris": "Romance Standard Time",
    "Indian/Reunion": "Mauritius Standard Time",
    "Indian/Mayotte": "E. Africa Standard Time",
    "America/Guadeloupe": "SA Western Standard Time",
    "America/Martinique": "SA Western Standard Time",
    "America/Cayenne": "SA Eastern Standard Time",
    "America/Miquelon": "Saint Pierre Standard Time",
    "Pacific/Noumea": "Central Pacific Standard Time",
    "Pacific/Tahiti": "Hawaiian Standard Time",
    "Pacific/Wallis": "UTC+12",
    "UTC": "UTC",
    "Etc/UTC": "UTC",
}


@dataclass(frozen=True)
class MeetingSpec:
    """One Teams meeting to hold: whose calendar, when, and under which creation key."""

    appointment_id: uuid.UUID
    advisor_id: str
    key: str  # transactionId and VisioRdvMeetingKey, see `meeting_key`
    subject: str
    start: datetime
    duration_minutes: int
    timezone: str
    recording_authorised: bool
    # Who is coming and how, for the event's body (None: erased, or not known).
    visitor: Visitor | None = None
    booking_public_url: str = LOCAL_BOOKING_URL

    @property
    def note(self) -> AdvisorNote:
        return AdvisorNote(
            appointment_id=self.appointment_id,
            subject=self.subject,
            recording_authorised=self.recording_authorised,
            visitor=self.visitor,
            advisor_page=advisor_page(self.booking_public_url, self.appointment_id),
        )


def meeting_key(appointment_id: uuid.UUID, reassigned_at: int | None = None) -> str:
    """The idempotency key of one creation: from the appointment id alone for its first
    meeting, and from the revision of the change of advisor for each later one, so a retry
    names the same event and a new advisor's meeting is a new one (even back to an advisor
    who had it before)."""
    name = str(appointment_id)
    if reassigned_at is not None:
        name += f"/reassigned-at/{reassigned_at}"
    return str(uuid.uuid5(TRANSACTION_NAMESPACE, name))


def event_times(start: datetime, duration_minutes: int, timezone: str) -> dict[str, Any]:
    """`start` and `end` as Graph's dateTimeTimeZone, wall-clock time in the appointment's zone."""
    windows = WINDOWS_ZONES.get(timezone)
    zone = ZoneInfo(timezone) if windows is not None else UTC
    local_start = start.astimezone(zone)
    local_end = (start + timedelta(minutes=duration_minutes)).astimezone(zone)
    name = windows or "UTC"
    return {
        "start": {"dateTime": local_start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": name},
        "end": {"dateTime": local_end.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": name},
    }


def event_body(spec: MeetingSpec) -> dict[str, Any]:
    """The calendar event of one meeting, in the advisor's calendar, mailing nobody."""
    return {
        "subject": spec.subject,
        "body": {
            "contentType": "HTML",
            "content": note_html(spec.note),
        },
        **event_times(spec.start, spec.duration_minutes, spec.timezone),
        "isOnlineMeeting": True,
        "onlineMeetingProvider": "teamsForBusiness",
        # No attendees: Graph would mail them; notifications sends our own email.
        "allowNewTimeProposals": False,
        "responseRequested": False,
        "showAs": "busy",
        "transactionId": spec.key,
        "singleValueExtendedProperties": [
            {"id": APPOINTMENT_PROPERTY_ID, "value": str(spec.appointment_id)},
            {"id": MEETING_KEY_PROPERTY_ID, "value": spec.key},
        ],
    }


def meeting_options(*, recording_authorised: bool) -> dict[str, Any]:
    """Lobby for everyone outside the organisation (the public waits to be admitted), the
    advisor alone presents, recording and transcription only with the person's consent."""
    return {
        "lobbyBypassSettings": {"scope": "organization", "isDialInBypassEnabled": False},
        "allowedPresenters": "organizer",
        "allowRecording": recording_authorised,
        "allowTranscription": recording_authorised,
        "recordAutomatically": False,
    }


def _odata_filter(expression: str) -> str:
    # Quoted for the URL, the OData quotes kept (the join URL's own %-escapes are escaped
    # again, as Graph's documentation shows).
    return "$filter=" + quote(expression, safe="'")


def join_web_url_filter(join_url: str) -> str:
    """`$filter=JoinWebUrl eq '<url>'`, the URL opaque (a ' doubled for OData)."""
    return _odata_filter("JoinWebUrl eq '{}'".format(join_url.replace("'", "''")))


def meeting_key_filter(key: str) -> str:
    """The events carrying one creation key."""
    value = key.replace("'", "''")
    return _odata_filter(
        f"singleValueExtendedProperties/any(ep: ep/id eq '{MEETING_KEY_PROPERTY_ID}' "
        f"and ep/value eq '{value}')"
    )
