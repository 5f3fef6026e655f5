"""Graph `onlineMeeting` resources: the Teams meeting behind an online calendar event.

Validation is strict where Graph is (unknown or read-only properties, bad enums, a start
without an end): an emulator that accepts what Graph refuses hides client bugs.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import html
import secrets
import string
import uuid
from typing import Any
from urllib.parse import quote

from visio_fakes.graph_emulator.errors import GraphError
from visio_fakes.graph_emulator.state import (
    EmulatorState,
    StoredEvent,
    StoredMeeting,
    default_meeting_options,
)
from visio_fakes.graph_emulator.timezones import format_utc, parse_instant
from visio_fakes.graph_emulator.users import object_id, user_address

MEETING_BOOLEANS = (
    "allowAttendeeToEnableCamera",
    "allowAttendeeToEnableMic",
    "allowBreakoutRooms",
    "allowCopyingAndSharingMeetingContent",
    "allowParticipantsToChangeName",
    "allowPowerPointSharing",
    "allowRecording",
    "allowTeamworkReactions",
    "allowTranscription",
    "allowWhiteboard",
    "isEntryExitAnnounced",
    "recordAutomatically",
)
MEETING_ENUMS = {
    "allowedPresenters": (
        "everyone",
        "organization",
        "roleIsPresenter",
        "organizer",
        "unknownFutureValue",
    ),
    "allowMeetingChat": ("enabled", "disabled", "limited", "unknownFutureValue"),
    "allowedLobbyAdmitters": (
        "organizerAndCoOrganizersAndPresenters",
        "organizerAndCoOrganizers",
        "unknownFutureValue",
    ),
    "allowLiveShare": ("enabled", "disabled", "unknownFutureValue"),
}
LOBBY_SCOPES = (
    "organizer",
    "organization",
    "organizationAndFederated",
    "everyone",
    "unknownFutureValue",
    "invited",
    "organizationExcludingGuests",
)
# What Graph v1.0 knows of an onlineMeeting (onlineMeetingBase, then onlineMeeting's own), as
# Microsoft's v1.0 models (msgraph-sdk-python) and the v1.0 reference list them. Beta-only
# properties (joinUrl, autoAdmittedUsers, anonymizeIdentityForRoles, meetingInfo…) are not
# served: a client that read one would work against the emulator and fail against Graph.
V1_MEETING_PROPERTIES = frozenset(
    {
        *MEETING_BOOLEANS,
        *MEETING_ENUMS,
        "id",
        "audioConferencing",
        "chatInfo",
        "chatRestrictions",
        "expiryDateTime",
        "isEndToEndEncryptionEnabled",
        "joinInformation",
        "joinMeetingIdSettings",
        "joinWebUrl",
        "lobbyBypassSettings",
        "meetingOptionsWebUrl",
        "meetingSpokenLanguageTag",
        "sensitivityLabelAssignment",
        "shareMeetingChatHistoryDefault",
        "subject",
        "videoTeleconferenceId",
        "watermarkProtection",
        # onlineMeeting's own (attendeeReport is a stream, never in the JSON)
        "broadcastSettings",
        "creationDateTime",
        "endDateTime",
        "externalId",
        "isBroadcast",
        "meetingTemplateId",
        "participants",
        "startDateTime",
    }
)
MEETING_UPDATABLE = frozenset(
    {
        *MEETING_BOOLEANS,
        *MEETING_ENUMS,
        "endDateTime",
        "lobbyBypassSettings",
        "participants",
        "startDateTime",
        "subject",
        "watermarkProtection",
    }
)
MEETING_READ_ONLY = frozenset(
    {
        "@odata.context",
        "@odata.type",
        "audioConferencing",
        "broadcastSettings",
        "chatInfo",
        "creationDateTime",
        "externalId",
        "id",
        "isBroadcast",
        "joinInformation",
        "joinMeetingIdSettings",
        "joinWebUrl",
        "videoTeleconferenceId",
    }
)


def create_meeting(state: EmulatorState, event: StoredEvent) -> StoredMeeting | None:
    """The Teams meeting of an online event; None when the organiser has no Teams licence
    (Graph then creates the event all the same, without a join URL)."""
    mailbox = state.mailbox(event.user_id)
    if not mailbox.teams_enabled:
        return None
    oid = object_id(event.user_id)
    while True:
        # Real meeting ids are base64 of "1*<organizer>*0**<thread>"; retry the rare draw
        # whose base64 holds '/' or '+', which would not survive a URL path.
        code = base64.b64encode(str(uuid.uuid4()).encode()).decode().rstrip("=")
        thread_id = f"19:meeting_{code}@thread.v2"
        meeting_id = base64.b64encode(f"1*{oid}*0**{thread_id}".encode()).decode().rstrip("=")
        if "/" not in meeting_id and "+" not in meeting_id:
            break
    join_meeting_id = str(secrets.randbelow(9 * 10**12) + 10**12)
    if state.join_url_style == "short":
        # Teams' newer form: the meeting id and a hashed passcode, nothing else.
        join_url = f"https://teams.microsoft.com/meet/{join_meeting_id}?p={_token(16)}"
    else:
        context = f"%7b%22Tid%22%3a%22{state.settings.tenant_id}%22%2c%22Oid%22%3a%22{oid}%22%7d"
        join_url = (
            f"https://teams.microsoft.com/l/meetup-join/19%3ameeting_{code}%40thread.v2/0"
            f"?context={context}"
        )
    meeting = StoredMeeting(
        id=meeting_id,
        user_id=event.user_id,
        event_id=event.id,
        join_web_url=join_url,
        thread_id=thread_id,
        join_meeting_id=join_meeting_id,
        passcode=_token(6),
        conference_id=(
            str(secrets.randbelow(9 * 10**8) + 10**8) if mailbox.audio_conferencing else None
        ),
        start=event.start,
        end=event.end,
        subject=event.fields.get("subject"),
        created_at=state.now(),
        options=default_meeting_options(),
    )
    state.add_meeting(meeting)
    event.online_meeting_id = meeting.id
    _append_teams_block(event, meeting)
    return meeting


TEAMS_RULE = (
    '<div style="width:100%"><span style="white-space:nowrap;color:#5F5F5F;opacity:.36">'
    + "_" * 80
    + "</span></div>"
)


def _append_teams_block(event: StoredEvent, meeting: StoredMeeting) -> None:
    """Like Outlook, the event's body gets the Teams block (the "meeting blob") below what the
    organiser wrote: the join link and meeting id, between two rules."""
    body = event.fields.get("body") or {"contentType": "html", "content": ""}
    content = str(body.get("content", ""))
    if str(body.get("contentType", "text")).lower() == "text":
        content = html.escape(content).replace("\n", "<br>")
    block = (
        f"{TEAMS_RULE}<div>Réunion Microsoft Teams</div>"
        f'<div><a href="{html.escape(meeting.join_web_url)}">Rejoindre la réunion</a></div>'
        f"<div>ID de réunion : {meeting.join_meeting_id}</div>{TEAMS_RULE}"
    )
    event.fields["body"] = {"contentType": "html", "content": content + block}


def keeps_teams_block(event: StoredEvent, meeting: StoredMeeting | None) -> bool:
    """Whether the event's body still holds its Teams block (Graph warns that writing a body
    without it can turn the online meeting off)."""
    content = str((event.fields.get("body") or {}).get("content", ""))
    return meeting is None or html.escape(meeting.join_web_url) in content


def _token(length: int) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _audio_conferencing(meeting: StoredMeeting) -> dict[str, Any] | None:
    if meeting.conference_id is None:
        return None
    toll = "+33 1 70 00 00 00"  # a number of the tenant's audio-conferencing bridge
    return {
        "conferenceId": meeting.conference_id,
        "tollNumber": toll,
        "tollFreeNumber": None,
        "tollNumbers": [toll],
        "tollFreeNumbers": [],
        "dialinUrl": (
            f"https://dialin.teams.microsoft.com/{object_id(meeting.user_id)}"
            f"?id={meeting.conference_id}"
        ),
    }


@functools.lru_cache(maxsize=4096)
def _join_information(join_web_url: str) -> str:
    """The join link as a data URL: the same for a meeting's every answer, so written once."""
    return "data:text/html," + quote(f'<a href="{join_web_url}">Join</a>')


def render_meeting(state: EmulatorState, meeting: StoredMeeting) -> dict[str, Any]:
    """The onlineMeeting as Graph v1.0 answers it: only properties of `V1_MEETING_PROPERTIES`."""
    oid = object_id(meeting.user_id)
    return {
        "id": meeting.id,
        "creationDateTime": format_utc(meeting.created_at),
        "startDateTime": format_utc(meeting.start),
        "endDateTime": format_utc(meeting.end),
        "joinWebUrl": meeting.join_web_url,
        "subject": meeting.subject,
        "isBroadcast": False,
        "broadcastSettings": None,
        "externalId": None,
        "meetingTemplateId": None,
        "videoTeleconferenceId": None,
        "shareMeetingChatHistoryDefault": "none",
        "watermarkProtection": None,
        "chatRestrictions": None,
        "isEndToEndEncryptionEnabled": False,
        "audioConferencing": _audio_conferencing(meeting),
        **{k: v for k, v in meeting.options.items() if k != "participants"},
        "chatInfo": {"threadId": meeting.thread_id, "messageId": "0", "replyChainMessageId": None},
        "joinMeetingIdSettings": {
            "isPasscodeRequired": True,
            "joinMeetingId": meeting.join_meeting_id,
            "passcode": meeting.passcode,
        },
        "joinInformation": {
            "content": _join_information(meeting.join_web_url),
            "contentType": "html",
        },
        "participants": {
            "organizer": {
                "upn": user_address(state, meeting.user_id),
                "role": "presenter",
                "identity": {
                    "application": None,
                    "device": None,
                    "user": {
                        "id": oid,
                        "displayName": None,
                        "tenantId": state.settings.tenant_id,
                    },
                },
            },
            "attendees": meeting.options.get("participants", {}).get("attendees", []),
        },
    }


def update_meeting(state: EmulatorState, meeting: StoredMeeting, patch: dict[str, Any]) -> None:
    for key in patch:
        if key in MEETING_READ_ONLY:
            raise GraphError(400, "BadRequest", f"The property '{key}' can't be updated.")
        if key not in MEETING_UPDATABLE:
            raise GraphError(
                400,
                "BadRequest",
                f"The property '{key}' does not exist on type 'microsoft.graph.onlineMeeting'.",
            )
    for key in MEETING_BOOLEANS:
        if key in patch and not isinstance(patch[key], bool):
            raise GraphError(400, "BadRequest", f"'{key}' must be a Boolean.")
    for key, allowed in MEETING_ENUMS.items():
        if key in patch and patch[key] not in allowed:
            raise GraphError(400, "BadRequest", f"Requested value '{patch[key]}' was not found.")
    if "subject" in patch and not isinstance(patch["subject"], str | None):
        raise GraphError(400, "BadRequest", "'subject' must be a string.")
    if "participants" in patch and not isinstance(patch["participants"], dict):
        raise GraphError(400, "BadRequest", "'participants' must be a meetingParticipants object.")
    lobby = patch.get("lobbyBypassSettings")
    if lobby is not None:
        if not isinstance(lobby, dict) or lobby.get("scope", "organization") not in LOBBY_SCOPES:
            raise GraphError(400, "BadRequest", "Invalid lobbyBypassSettings.")
        if not isinstance(lobby.get("isDialInBypassEnabled", False), bool):
            raise GraphError(400, "BadRequest", "'isDialInBypassEnabled' must be a Boolean.")
    if ("startDateTime" in patch) != ("endDateTime" in patch):
        # Documented: adjusting the time always needs both properties.
        raise GraphError(
            400, "BadRequest", "Both startDateTime and endDateTime are required to reschedule."
        )
    if "startDateTime" in patch:
        start, end = (
            _meeting_instant(patch["startDateTime"]),
            _meeting_instant(patch["endDateTime"]),
        )
        if end < start:
            raise GraphError(400, "BadRequest", "endDateTime must be after startDateTime.")
        meeting.start, meeting.end = start, end
    if "subject" in patch:
        meeting.subject = patch["subject"]
    for key, value in patch.items():
        if key in ("startDateTime", "endDateTime", "subject"):
            continue
        if key == "lobbyBypassSettings":
            # A partial lobbyBypassSettings updates only the fields it names.
            meeting.options[key] = {**meeting.options.get(key, {}), **value}
        else:
            meeting.options[key] = value


def _meeting_instant(value: Any) -> dt.datetime:
    try:
        instant = parse_instant(str(value))
    except ValueError:
        raise GraphError(400, "BadRequest", f"Invalid date-time '{value}'.") from None
    return instant.replace(tzinfo=dt.UTC) if instant.tzinfo is None else instant.astimezone(dt.UTC)
