"""Microsoft Graph v1.0 endpoints: calendar events and Teams online meetings of a user, and the
meetings' artifacts (attendance reports, recordings)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from visio_fakes.graph_emulator.errors import GraphError
from visio_fakes.graph_emulator.events import (
    create_event,
    delete_event,
    render_event,
    same_property_id,
    update_event,
)
from visio_fakes.graph_emulator.meetings import render_meeting, update_meeting
from visio_fakes.graph_emulator.routes import Answer, GraphCall, Routes
from visio_fakes.graph_emulator.state import EmulatorState, StoredEvent, StoredMeeting
from visio_fakes.graph_emulator.timezones import preferred_zone
from visio_fakes.graph_emulator.users import is_guid

routes = Routes("/v1.0")

CALENDAR_WRITE = {"Calendars.ReadWrite"}
CALENDAR_READ = {"Calendars.ReadWrite", "Calendars.Read", "Calendars.ReadBasic.All"}
MEETINGS_WRITE = {"OnlineMeetings.ReadWrite.All"}
MEETINGS_READ = {"OnlineMeetings.ReadWrite.All", "OnlineMeetings.Read.All"}
ARTIFACTS_READ = {"OnlineMeetingArtifact.Read.All"}
RECORDINGS_READ = {"OnlineMeetingRecording.Read.All"}
DEFAULT_PAGE_SIZE = 10  # Graph pages event lists by 10 unless $top says otherwise

_ODATA_STRING = r"'((?:[^']|'')*)'"
_JOIN_URL_FILTER = re.compile(rf"^\s*JoinWebUrl\s+eq\s+{_ODATA_STRING}\s*$", re.IGNORECASE)
_JOIN_ID_FILTER = re.compile(
    rf"^\s*joinMeetingIdSettings/joinMeetingId\s+eq\s+{_ODATA_STRING}\s*$", re.IGNORECASE
)
_EXTENDED_FILTER = re.compile(
    rf"^\s*singleValueExtendedProperties/any\(\s*(\w+)\s*:\s*\1/id\s+eq\s+{_ODATA_STRING}"
    rf"(?:\s+and\s+\1/value\s+eq\s+{_ODATA_STRING})?\s*\)\s*$",
    re.IGNORECASE,
)
_EXPAND_EXTENDED = re.compile(
    rf"^\s*singleValueExtendedProperties(?:\(\s*\$filter\s*=\s*id\s+eq\s+{_ODATA_STRING}\s*\))?\s*$",
    re.IGNORECASE,
)


def _odata_literal(text: str) -> str:
    return text.replace("''", "'")


def _authorize(call: GraphCall, *, roles: set[str], meetings: bool) -> str:
    """Token, then permission, then the application access policy, as Graph checks them;
    returns the mailbox the call acts on (its `user_id`)."""
    state = call.state
    user_id = call.params["user_id"]
    claims = state.tokens.verify(call.headers.get("authorization"), now=state.now())
    if not (claims.roles & roles):
        if meetings:
            raise GraphError(
                403,
                "Forbidden",
                "Application does not have permission to access online meetings "
                f"(needs one of {sorted(roles)}).",
            )
        raise GraphError(
            403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."
        )
    if not (is_guid(user_id) or "@" in user_id) or not state.mailbox(user_id).exists:
        raise GraphError(404, "ErrorInvalidUser", f"The requested user '{user_id}' is invalid.")
    if meetings and not state.access_policy.allows_online_meetings(user_id):
        raise GraphError(403, "Forbidden", "No application access policy found for this app.")
    if not meetings and not state.access_policy.allows_calendar(user_id):
        raise GraphError(
            403,
            "ErrorAccessDenied",
            "Access to OData is disabled: Blocked by tenant configured AppOnly AccessPolicy "
            "settings.",
        )
    return user_id


def _event_or_404(state: EmulatorState, user_id: str, event_id: str) -> StoredEvent:
    event = state.user_event(user_id, event_id)
    if event is None:
        raise GraphError(
            404, "ErrorItemNotFound", "The specified object was not found in the store."
        )
    return event


def _meeting_or_404(state: EmulatorState, user_id: str, meeting_id: str) -> StoredMeeting:
    meeting = state.user_meeting(user_id, meeting_id)
    if meeting is None:
        raise GraphError(404, "NotFound", "The requested online meeting was not found.")
    return meeting


def _shape_event(call: GraphCall, event: StoredEvent) -> dict[str, Any]:
    """Render an event honouring Prefer, $select and $expand like Graph."""
    prefer = call.headers.get("prefer", "")
    rendered = render_event(
        call.state,
        event,
        zone=preferred_zone(prefer),
        text_body='outlook.body-content-type="text"' in prefer.lower(),
    )
    select = call.option("select")
    if select:
        wanted = [name.strip() for name in select.split(",") if name.strip()]
        for name in wanted:
            if name not in rendered:
                raise GraphError(
                    400,
                    "RequestBroker--ParseUri",
                    f"Could not find a property named '{name}' on type 'microsoft.graph.event'.",
                )
        keep = {"@odata.context", "@odata.etag", "id", *wanted}
        rendered = {k: v for k, v in rendered.items() if k in keep}
    expand = call.option("expand")
    if expand:
        match = _EXPAND_EXTENDED.match(expand)
        if match is None:
            raise GraphError(
                400,
                "BadRequest",
                f"Parsing OData Select and Expand failed: Could not find a property named "
                f"'{expand}' on type 'microsoft.graph.event'.",
            )
        wanted_id = _odata_literal(match.group(1)) if match.group(1) is not None else None
        rendered["singleValueExtendedProperties"] = [
            {"id": prop_id, "value": value}
            for prop_id, value in event.extended_properties.items()
            if wanted_id is None or same_property_id(prop_id, wanted_id)
        ]
    return rendered


def _preference_headers(call: GraphCall) -> dict[str, str]:
    zone = preferred_zone(call.headers.get("prefer"))
    return {"Preference-Applied": f'outlook.timezone="{zone}"'} if zone else {}


def _event_answer(call: GraphCall, event: StoredEvent, status: int = 200) -> Answer:
    return Answer(status, _shape_event(call, event), _preference_headers(call))


_EVENTS = ("/users/{user_id}/events", "/users/{user_id}/calendar/events")
_EVENT = ("/users/{user_id}/events/{event_id}", "/users/{user_id}/calendar/events/{event_id}")
_CANCEL = tuple(f"{path}/cancel" for path in _EVENT)


@routes.add("POST", *_EVENTS, name="graph.events.create")
def post_event(call: GraphCall) -> Answer:
    user_id = _authorize(call, roles=CALENDAR_WRITE, meetings=False)
    event, _created = create_event(call.state, user_id, call.json_object())
    # A replayed transactionId answers like the original creation did.
    return _event_answer(call, event, 201)


@routes.add("GET", *_EVENTS, name="graph.events.list")
def list_events(call: GraphCall) -> Answer:
    user_id = _authorize(call, roles=CALENDAR_READ, meetings=False)
    state = call.state
    filter_text = call.option("filter")
    if filter_text:
        match = _EXTENDED_FILTER.match(filter_text)
        if match is None:
            raise GraphError(
                400, "ErrorInvalidUrlQueryFilter", f"The filter '{filter_text}' is not supported."
            )
        prop_id = _odata_literal(match.group(2))
        if match.group(3) is not None:
            events = state.live_events_with_property(
                user_id, prop_id, _odata_literal(match.group(3))
            )
        else:
            events = [
                e
                for e in state.live_events_of(user_id)
                if any(same_property_id(pid, prop_id) for pid in e.extended_properties)
            ]
    else:
        events = state.live_events_of(user_id)
    try:
        top = int(call.option("top") or DEFAULT_PAGE_SIZE)
        skip = int(call.option("skip") or 0)
    except ValueError:
        raise GraphError(400, "BadRequest", "$top and $skip must be integers.") from None
    page = events[skip : skip + top]
    body: dict[str, Any] = {
        "@odata.context": f"{state.base_url}/v1.0/$metadata#users('{user_id}')/events",
        "value": [_shape_event(call, e) for e in page],
    }
    if skip + top < len(events):
        params = {k: v for k, v in call.query.items() if k not in ("$skip", "skip")}
        params["$skip"] = str(skip + top)
        query = "&".join(f"{quote(k)}={quote(v)}" for k, v in params.items())
        body["@odata.nextLink"] = f"{state.base_url}{call.path}?{query}"
    return Answer(200, body, _preference_headers(call))


@routes.add("GET", *_EVENT, name="graph.events.get")
def get_event(call: GraphCall) -> Answer:
    user_id = _authorize(call, roles=CALENDAR_READ, meetings=False)
    return _event_answer(call, _event_or_404(call.state, user_id, call.params["event_id"]))


@routes.add("PATCH", *_EVENT, name="graph.events.update")
def patch_event(call: GraphCall) -> Answer:
    user_id = _authorize(call, roles=CALENDAR_WRITE, meetings=False)
    event = _event_or_404(call.state, user_id, call.params["event_id"])
    update_event(call.state, event, call.json_object())
    return _event_answer(call, event)


@routes.add("DELETE", *_EVENT, name="graph.events.delete")
def remove_event(call: GraphCall) -> Answer:
    user_id = _authorize(call, roles=CALENDAR_WRITE, meetings=False)
    delete_event(call.state, _event_or_404(call.state, user_id, call.params["event_id"]))
    return Answer(204)


@routes.add("POST", *_CANCEL, name="graph.events.cancel")
def cancel_event(call: GraphCall) -> Answer:
    """The organiser cancels: attendees get the comment, the event goes to Deleted Items."""
    user_id = _authorize(call, roles=CALENDAR_WRITE, meetings=False)
    event = _event_or_404(call.state, user_id, call.params["event_id"])
    body = call.json_object() if call.has_body() else {}
    comments = [v for k, v in body.items() if k.lower() == "comment"]
    unknown = [k for k in body if k.lower() != "comment"]
    if unknown or not all(isinstance(c, str) for c in comments):
        raise GraphError(400, "RequestBodyRead", "The cancel action takes only a 'Comment' string.")
    delete_event(call.state, event, cancel_comment=comments[0] if comments else "")
    return Answer(202)


@routes.add("GET", "/users/{user_id}/onlineMeetings", name="graph.onlineMeetings.list")
def find_meetings(call: GraphCall) -> Answer:
    user_id = _authorize(call, roles=MEETINGS_READ, meetings=True)
    state = call.state
    filter_text = call.option("filter")
    if not filter_text:
        raise GraphError(400, "BadRequest", "Listing online meetings requires a $filter.")
    by_url = _JOIN_URL_FILTER.match(filter_text)
    by_id = _JOIN_ID_FILTER.match(filter_text)
    if by_url is None and by_id is None:
        raise GraphError(400, "BadRequest", f"Filter '{filter_text}' is not supported.")
    if by_url is not None:
        # Any equivalent percent-encoding of the join URL finds the meeting.
        meeting = state.live_meeting_by_join_url(_odata_literal(by_url.group(1)))
    else:
        meeting = state.live_meeting_by_join_id(_odata_literal(by_id.group(1)) if by_id else "")
    mine = meeting is not None and meeting.user_id.lower() == user_id.lower()
    found = [meeting] if meeting is not None and mine else []
    return Answer(
        200,
        {
            "@odata.context": f"{state.base_url}/v1.0/$metadata#users('{user_id}')/onlineMeetings",
            "value": [render_meeting(state, m) for m in found],
        },
    )


_MEETING = "/users/{user_id}/onlineMeetings/{meeting_id}"


@routes.add("GET", _MEETING, name="graph.onlineMeetings.get")
def get_meeting(call: GraphCall) -> Answer:
    user_id = _authorize(call, roles=MEETINGS_READ, meetings=True)
    meeting = _meeting_or_404(call.state, user_id, call.params["meeting_id"])
    return Answer(200, _meeting_body(call.state, user_id, meeting))


@routes.add("PATCH", _MEETING, name="graph.onlineMeetings.update")
def patch_meeting(call: GraphCall) -> Answer:
    user_id = _authorize(call, roles=MEETINGS_WRITE, meetings=True)
    meeting = _meeting_or_404(call.state, user_id, call.params["meeting_id"])
    update_meeting(call.state, meeting, call.json_object())
    return Answer(200, _meeting_body(call.state, user_id, meeting))


def _meeting_body(state: EmulatorState, user_id: str, meeting: StoredMeeting) -> dict[str, Any]:
    context = f"{state.base_url}/v1.0/$metadata#users('{user_id}')/onlineMeetings/$entity"
    return {"@odata.context": context, **render_meeting(state, meeting)}


# --- meeting artifacts: attendance reports and recordings (scripted by the control API) ---

_REPORTS = f"{_MEETING}/attendanceReports"
_RECORDINGS = f"{_MEETING}/recordings"


def _meeting_context(state: EmulatorState, user_id: str, meeting_id: str, tail: str) -> str:
    return (
        f"{state.base_url}/v1.0/$metadata#users('{user_id}')/onlineMeetings('{meeting_id}')/{tail}"
    )


def _artifacts_of(call: GraphCall, roles: set[str]) -> tuple[str, str]:
    """(user_id, meeting_id) of an artifact call, once allowed and the meeting found."""
    user_id = _authorize(call, roles=roles, meetings=True)
    meeting_id = call.params["meeting_id"]
    _meeting_or_404(call.state, user_id, meeting_id)
    return user_id, meeting_id


@routes.add("GET", _REPORTS, name="graph.attendanceReports.list")
def list_attendance_reports(call: GraphCall) -> Answer:
    user_id, meeting_id = _artifacts_of(call, ARTIFACTS_READ)
    state = call.state
    reports = state.artifacts.list_reports(meeting_id, state.now())
    return Answer(
        200,
        {
            "@odata.context": _meeting_context(state, user_id, meeting_id, "attendanceReports"),
            "value": [r.render(with_records=False) for r in reports],
        },
    )


@routes.add("GET", f"{_REPORTS}/{{report_id}}", name="graph.attendanceReports.get")
def get_attendance_report(call: GraphCall) -> Answer:
    user_id, meeting_id = _artifacts_of(call, ARTIFACTS_READ)
    state = call.state
    report = state.artifacts.report(meeting_id, call.params["report_id"])
    if report is None:
        raise GraphError(404, "NotFound", "The requested attendance report was not found.")
    # Records come only with $expand=attendanceRecords, as in Graph.
    expand = (call.option("expand") or "").replace(" ", "").split(",")
    context = _meeting_context(state, user_id, meeting_id, "attendanceReports")
    return Answer(
        200,
        {
            "@odata.context": f"{context}(attendanceRecords())/$entity",
            **report.render(with_records="attendanceRecords" in expand),
        },
    )


@routes.add("GET", _RECORDINGS, name="graph.recordings.list")
def list_recordings(call: GraphCall) -> Answer:
    user_id, meeting_id = _artifacts_of(call, RECORDINGS_READ)
    state = call.state
    base = f"{state.base_url}/v1.0/users/{user_id}/onlineMeetings/{meeting_id}/recordings"
    recordings = state.artifacts.recordings.get(meeting_id, [])
    return Answer(
        200,
        {
            "@odata.context": _meeting_context(state, user_id, meeting_id, "recordings"),
            "value": [r.render(f"{base}/{r.id}/content") for r in recordings],
        },
    )


@routes.add("GET", f"{_RECORDINGS}/{{recording_id}}/content", name="graph.recordings.content")
def recording_content(call: GraphCall) -> Answer:
    # Served so that stats can show a client never downloads one (a call would count).
    _user_id, meeting_id = _artifacts_of(call, RECORDINGS_READ)
    if call.state.artifacts.recording(meeting_id, call.params["recording_id"]) is None:
        raise GraphError(404, "NotFound", "The requested recording was not found.")
    return Answer(200, b"\x00" * 16, media_type="video/mp4")
