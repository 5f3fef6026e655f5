"""Graph `event` resources of a user's calendar: validation, changes, rendering.

Validation is strict where Graph is (unknown properties, wrong types, bad enums, end
before start): an emulator that accepts what Graph refuses hides client bugs.
"""

from __future__ import annotations

import base64
import html
import re
import secrets
from typing import Any
from urllib.parse import quote

from visio_fakes.graph_emulator.errors import GraphError
from visio_fakes.graph_emulator.meetings import create_meeting, keeps_teams_block
from visio_fakes.graph_emulator.state import EmulatorState, StoredEvent
from visio_fakes.graph_emulator.timezones import (
    format_date_time_time_zone,
    format_utc,
    parse_date_time_time_zone,
)
from visio_fakes.graph_emulator.users import user_address

EVENT_WRITABLE = frozenset(
    {
        "allowNewTimeProposals",
        "attendees",
        "body",
        "categories",
        "end",
        "hideAttendees",
        "importance",
        "isAllDay",
        "isOnlineMeeting",
        "isReminderOn",
        "location",
        "locations",
        "multiValueExtendedProperties",
        "onlineMeetingProvider",
        "originalEndTimeZone",
        "originalStartTimeZone",
        "recurrence",
        "reminderMinutesBeforeStart",
        "responseRequested",
        "sensitivity",
        "showAs",
        "singleValueExtendedProperties",
        "start",
        "subject",
        "transactionId",
    }
)
# Read-only properties a client may echo back; Graph ignores them on write.
EVENT_READ_ONLY = frozenset(
    {
        "@odata.context",
        "@odata.etag",
        "@odata.type",
        "bodyPreview",
        "changeKey",
        "createdDateTime",
        "hasAttachments",
        "iCalUId",
        "id",
        "isCancelled",
        "isDraft",
        "isOrganizer",
        "lastModifiedDateTime",
        "onlineMeeting",
        "onlineMeetingUrl",
        "organizer",
        "responseStatus",
        "seriesMasterId",
        "type",
        "webLink",
    }
)
BOOLEAN_EVENT_FIELDS = (
    "allowNewTimeProposals",
    "hideAttendees",
    "isAllDay",
    "isOnlineMeeting",
    "isReminderOn",
    "responseRequested",
)
EVENT_ENUMS = {
    "onlineMeetingProvider": (
        "teamsForBusiness",
        "skypeForBusiness",
        "skypeForConsumer",
        "unknown",
    ),
    "importance": ("low", "normal", "high"),
    "sensitivity": ("normal", "personal", "private", "confidential"),
    "showAs": ("free", "tentative", "busy", "oof", "workingElsewhere", "unknown"),
}
EXTENDED_PROPERTY_ID = re.compile(
    r"^(Binary|Boolean|CLSID|Currency|Double|Float|Integer|Long|Object|Short|String|SystemTime)"
    r"\s+(\{[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\}"
    r"\s+(Name\s+\S.*|Id\s+0x[0-9A-Fa-f]+)|0x[0-9A-Fa-f]+)$"
)


def _bad_body(message: str) -> GraphError:
    return GraphError(400, "RequestBodyRead", message)


def _invalid(message: str) -> GraphError:
    return GraphError(400, "ErrorInvalidRequest", message)


def _validate_event_payload(payload: dict[str, Any]) -> None:
    for key in payload:
        if key not in EVENT_WRITABLE and key not in EVENT_READ_ONLY:
            raise _bad_body(
                f"The property '{key}' does not exist on type 'microsoft.graph.event'. Make "
                "sure to only use property names that are defined by the type or mark the "
                "type as open type."
            )
    for key in BOOLEAN_EVENT_FIELDS:
        if key in payload and not isinstance(payload[key], bool):
            raise _bad_body(
                f"Cannot convert a primitive value to the expected type 'Edm.Boolean' ({key})."
            )
    for key, allowed in EVENT_ENUMS.items():
        if key in payload and payload[key] not in allowed:
            raise _bad_body(f"Requested value '{payload[key]}' was not found ({key}).")
    if "subject" in payload and not isinstance(payload["subject"], str | None):
        raise _bad_body(
            "Cannot convert a primitive value to the expected type 'Edm.String' (subject)."
        )
    if "body" in payload:
        body = payload["body"]
        if not isinstance(body, dict) or not isinstance(body.get("content", ""), str):
            raise _bad_body("The 'body' property must be an itemBody object.")
        if str(body.get("contentType", "text")).lower() not in ("text", "html"):
            raise _bad_body(
                f"Requested value '{body.get('contentType')}' was not found (contentType)."
            )
    if "transactionId" in payload and not isinstance(payload["transactionId"], str | None):
        raise _bad_body(
            "Cannot convert a primitive value to the expected type 'Edm.String' (transactionId)."
        )
    if "attendees" in payload:
        attendees = payload["attendees"]
        if not isinstance(attendees, list) or not all(
            isinstance(a, dict)
            and isinstance(a.get("emailAddress"), dict)
            and isinstance(a["emailAddress"].get("address"), str)
            for a in attendees
        ):
            raise _bad_body("Each attendee must have an emailAddress with an address.")
    if "categories" in payload and not (
        isinstance(payload["categories"], list)
        and all(isinstance(c, str) for c in payload["categories"])
    ):
        raise _bad_body("The 'categories' property must be a collection of strings.")
    if "singleValueExtendedProperties" in payload:
        _parse_extended_properties(payload["singleValueExtendedProperties"])


def _parse_extended_properties(value: Any) -> dict[str, str]:
    if not isinstance(value, list):
        raise _bad_body("The 'singleValueExtendedProperties' property must be a collection.")
    parsed: dict[str, str] = {}
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise _bad_body("Each single-value extended property needs an 'id' string.")
        if not EXTENDED_PROPERTY_ID.match(item["id"].strip()):
            raise _invalid(f"The extended property id '{item['id']}' is not valid.")
        if not isinstance(item.get("value"), str):
            raise _bad_body(f"The value of extended property '{item['id']}' must be a string.")
        parsed[item["id"].strip()] = item["value"]
    return parsed


def same_property_id(left: str, right: str) -> bool:
    """Graph matches the property set/type case-insensitively but the Name exactly."""
    left_head, _, left_name = left.partition(" Name ")
    right_head, _, right_name = right.partition(" Name ")
    return left_head.lower() == right_head.lower() and left_name == right_name


def _other_fields(payload: dict[str, Any]) -> dict[str, Any]:
    skip = {"start", "end", "transactionId", "singleValueExtendedProperties", *EVENT_READ_ONLY}
    return {k: v for k, v in payload.items() if k not in skip}


def create_event(
    state: EmulatorState, user_id: str, payload: dict[str, Any]
) -> tuple[StoredEvent, bool]:
    """Create the event (and its Teams meeting); return (event, created).

    A live event of the same mailbox with the same transactionId is returned instead of a
    new one: that is what transactionId is for (a client retrying after a timeout).
    """
    _validate_event_payload(payload)
    transaction_id = payload.get("transactionId") or None
    if transaction_id is not None:
        existing = state.live_event_by_transaction(user_id, transaction_id)
        if existing is not None:
            state.stats.transaction_replays[transaction_id] += 1
            return existing, False
    if "start" not in payload or "end" not in payload:
        raise _invalid("An event needs both 'start' and 'end'.")
    start, start_zone = parse_date_time_time_zone(payload["start"], "start")
    end, end_zone = parse_date_time_time_zone(payload["end"], "end")
    if end < start:
        raise _invalid("The end date occurs before the start date.")
    now = state.now()
    event = StoredEvent(
        id="AAMkAD" + base64.urlsafe_b64encode(secrets.token_bytes(96)).decode(),
        user_id=user_id,
        ical_uid="040000008200E00074C5B7101A82E00800000000" + secrets.token_hex(28).upper(),
        transaction_id=transaction_id,
        start=start,
        end=end,
        start_zone=start_zone,
        end_zone=end_zone,
        fields=_other_fields(payload),
        extended_properties=_parse_extended_properties(
            payload.get("singleValueExtendedProperties", [])
        ),
        created_at=now,
        updated_at=now,
        change_key=secrets.token_urlsafe(21),
    )
    state.add_event(event)
    if payload.get("isOnlineMeeting") is True:
        create_meeting(state, event)
    _mail_attendees(state, event, "invitation")
    return event, True


def _mail_attendees(state: EmulatorState, event: StoredEvent, kind: str) -> None:
    """Outlook mails each attendee of the organiser's event an invitation, an update or a
    cancellation (an event without attendees mails no one)."""
    attendees = len(event.fields.get("attendees") or [])
    if attendees:
        state.stats.attendee_messages[kind] += attendees


def update_event(state: EmulatorState, event: StoredEvent, patch: dict[str, Any]) -> None:
    _validate_event_payload(patch)
    if "transactionId" in patch and patch["transactionId"] != event.transaction_id:
        raise _invalid("The transactionId of an event can't be changed once set.")
    start, start_zone = (
        parse_date_time_time_zone(patch["start"], "start")
        if "start" in patch
        else (event.start, event.start_zone)
    )
    end, end_zone = (
        parse_date_time_time_zone(patch["end"], "end")
        if "end" in patch
        else (event.end, event.end_zone)
    )
    if end < start:
        raise _invalid("The end date occurs before the start date.")
    event.start, event.start_zone, event.end, event.end_zone = start, start_zone, end, end_zone
    others = _other_fields(patch)
    if event.online_meeting_id is not None:
        # Once online, Outlook ignores attempts to turn the meeting off.
        others.pop("isOnlineMeeting", None)
        others.pop("onlineMeetingProvider", None)
    event.fields.update(others)
    if "singleValueExtendedProperties" in patch:
        state.index_properties(
            event, _parse_extended_properties(patch["singleValueExtendedProperties"])
        )
    event.updated_at = state.now()
    event.change_key = secrets.token_urlsafe(21)
    if patch.get("isOnlineMeeting") is True and event.online_meeting_id is None:
        create_meeting(state, event)
    meeting = state.meetings.get(event.online_meeting_id or "")
    if "body" in patch and not keeps_teams_block(event, meeting):
        state.stats.teams_blocks_removed += 1
    _mail_attendees(state, event, "update")
    if meeting is not None:
        # The Teams meeting follows its calendar event.
        meeting.start, meeting.end = event.start, event.end
        meeting.subject = event.fields.get("subject")


def delete_event(
    state: EmulatorState, event: StoredEvent, *, cancel_comment: str | None = None
) -> None:
    """DELETE, or the organiser's cancel (which moves it to Deleted Items: gone all the same)."""
    now = state.now()
    event.deleted_at = now
    event.updated_at = now
    event.cancel_comment = cancel_comment
    if cancel_comment is not None:
        _mail_attendees(state, event, "cancellation")
    state.forget_event(event)
    meeting = state.meetings.get(event.online_meeting_id or "")
    if meeting is not None:
        meeting.deleted_at = now


def _html_body(body: dict[str, Any]) -> str:
    content = str(body.get("content", ""))
    if str(body.get("contentType", "text")).lower() == "text":
        content = html.escape(content).replace("\n", "<br>\r\n")
    if content.lstrip().lower().startswith("<html"):
        return content
    return (
        '<html>\r\n<head>\r\n<meta http-equiv="Content-Type" content="text/html; '
        'charset=utf-8">\r\n</head>\r\n<body>\r\n' + content + "\r\n</body>\r\n</html>\r\n"
    )


def _text_body(body: dict[str, Any]) -> str:
    content = str(body.get("content", ""))
    if str(body.get("contentType", "text")).lower() == "html":
        content = html.unescape(re.sub(r"<[^>]+>", "", content)).strip()
    return content


def render_event(
    state: EmulatorState, event: StoredEvent, *, zone: str | None, text_body: bool = False
) -> dict[str, Any]:
    """The event as Graph returns it (times in `zone`, UTC by default)."""
    fields = event.fields
    out_zone = zone or "UTC"
    body = fields.get("body") or {"contentType": "text", "content": ""}
    is_online = event.online_meeting_id is not None
    meeting = state.meetings.get(event.online_meeting_id or "")
    address = user_address(state, event.user_id)
    location = _location(fields)
    rendered: dict[str, Any] = {
        "@odata.context": (
            f"{state.base_url}/v1.0/$metadata#users('{event.user_id}')/events/$entity"
        ),
        "@odata.etag": f'W/"{event.change_key}"',
        "id": event.id,
        "createdDateTime": format_utc(event.created_at),
        "lastModifiedDateTime": format_utc(event.updated_at),
        "changeKey": event.change_key,
        "categories": fields.get("categories", []),
        "originalStartTimeZone": fields.get("originalStartTimeZone", event.start_zone),
        "originalEndTimeZone": fields.get("originalEndTimeZone", event.end_zone),
        "iCalUId": event.ical_uid,
        "reminderMinutesBeforeStart": fields.get("reminderMinutesBeforeStart", 15),
        "isReminderOn": fields.get("isReminderOn", True),
        "hasAttachments": False,
        "subject": fields.get("subject"),
        "bodyPreview": _text_body(body)[:255],
        "importance": fields.get("importance", "normal"),
        "sensitivity": fields.get("sensitivity", "normal"),
        "isAllDay": fields.get("isAllDay", False),
        "isCancelled": event.is_deleted,
        "isOrganizer": True,
        "responseRequested": fields.get("responseRequested", True),
        "seriesMasterId": None,
        "showAs": fields.get("showAs", "busy"),
        "type": "singleInstance",
        "webLink": (
            f"https://outlook.office365.com/owa/?itemid={quote(event.id, safe='')}"
            "&exvsurl=1&path=/calendar/item"
        ),
        "onlineMeetingUrl": None,
        "isOnlineMeeting": is_online,
        "onlineMeetingProvider": (
            fields.get("onlineMeetingProvider", "teamsForBusiness") if is_online else "unknown"
        ),
        "allowNewTimeProposals": fields.get("allowNewTimeProposals", True),
        "isDraft": False,
        "hideAttendees": fields.get("hideAttendees", False),
        "responseStatus": {"response": "organizer", "time": "0001-01-01T00:00:00Z"},
        "body": (
            {"contentType": "text", "content": _text_body(body)}
            if text_body
            else {"contentType": "html", "content": _html_body(body)}
        ),
        "start": format_date_time_time_zone(event.start, out_zone),
        "end": format_date_time_time_zone(event.end, out_zone),
        "location": location,
        "locations": fields.get("locations", [location] if location["displayName"] else []),
        "recurrence": fields.get("recurrence"),
        "attendees": _attendees(fields),
        "organizer": {"emailAddress": {"name": address.split("@")[0], "address": address}},
        "onlineMeeting": {"joinUrl": meeting.join_web_url} if meeting is not None else None,
    }
    if event.transaction_id is not None:
        # Graph returns transactionId only when the app set it.
        rendered["transactionId"] = event.transaction_id
    return rendered


def _location(fields: dict[str, Any]) -> dict[str, Any]:
    """The event's location, Graph's defaults under what was set."""
    return {
        "displayName": "",
        "locationType": "default",
        "uniqueIdType": "unknown",
        "address": {},
        "coordinates": {},
        **(fields.get("location") or {}),
    }


def _attendees(fields: dict[str, Any]) -> list[dict[str, Any]]:
    """The attendees as Graph returns them: none has answered yet."""
    return [
        {
            "type": a.get("type", "required"),
            "status": {"response": "none", "time": "0001-01-01T00:00:00Z"},
            "emailAddress": {
                "name": a["emailAddress"].get("name", a["emailAddress"]["address"]),
                "address": a["emailAddress"]["address"],
            },
        }
        for a in fields.get("attendees", [])
    ]
