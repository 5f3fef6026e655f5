"""Microsoft Graph v1.0 endpoints: calendar events and Teams online meetings of a user, and the
meetings' artifacts (attendance reports, recordings)."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from visio_fakes.graph_emulator.errors import GraphError
from visio_fakes.graph_emulator.events import (
    create_event,
    delete_event,
    render_event,
    same_property_id,
    update_event,
)
from visio_fakes.graph_emulator.meetings import render_meeting, update_meeting
from visio_fakes.graph_emulator.state import EmulatorState, StoredEvent, StoredMeeting
from visio_fakes.graph_emulator.timezones import preferred_zone
from visio_fakes.graph_emulator.users import is_guid

router = APIRouter(prefix="/v1.0")

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


def _state(request: Request) -> EmulatorState:
    state: EmulatorState = request.app.state.emulator
    return state


def _odata_literal(text: str) -> str:
    return text.replace("''", "'")


def _query(request: Request, name: str) -> str | None:
    # Graph accepts OData system query options with or without their '$'.
    return request.query_params.get(f"${name}") or request.query_params.get(name)


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        raise GraphError(400, "BadRequest", "Empty Payload. JSON content expected.")
    try:
        payload = json.loads(raw)
    except ValueError:
        raise GraphError(
            400,
            "BadRequest",
            "Unable to read JSON request payload. Please ensure Content-Type header is set "
            "and payload is of valid JSON format.",
        ) from None
    if not isinstance(payload, dict):
        raise GraphError(400, "BadRequest", "The request payload must be a JSON object.")
    return payload


def _authorize(request: Request, user_id: str, *, roles: set[str], meetings: bool) -> None:
    """Token, then permission, then the application access policy, as Graph checks them."""
    state = _state(request)
    claims = state.tokens.verify(request.headers.get("authorization"), now=state.now())
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


def _shape_event(request: Request, event: StoredEvent) -> dict[str, Any]:
    """Render an event honouring Prefer, $select and $expand like Graph."""
    state = _state(request)
    prefer = request.headers.get("prefer", "")
    rendered = render_event(
        state,
        event,
        zone=preferred_zone(prefer),
        text_body='outlook.body-content-type="text"' in prefer.lower(),
    )
    select = _query(request, "select")
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
    expand = _query(request, "expand")
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


def _preference_headers(request: Request) -> dict[str, str]:
    zone = preferred_zone(request.headers.get("prefer"))
    return {"Preference-Applied": f'outlook.timezone="{zone}"'} if zone else {}


@router.post("/users/{user_id}/events", name="graph.events.create")
@router.post("/users/{user_id}/calendar/events", name="graph.events.create")
async def post_event(user_id: str, request: Request) -> JSONResponse:
    _authorize(request, user_id, roles=CALENDAR_WRITE, meetings=False)
    state = _state(request)
    event, _created = create_event(state, user_id, await _json_object(request))
    # A replayed transactionId answers like the original creation did.
    return JSONResponse(
        _shape_event(request, event), status_code=201, headers=_preference_headers(request)
    )


@router.get("/users/{user_id}/events", name="graph.events.list")
@router.get("/users/{user_id}/calendar/events", name="graph.events.list")
async def list_events(user_id: str, request: Request) -> JSONResponse:
    _authorize(request, user_id, roles=CALENDAR_READ, meetings=False)
    state = _state(request)
    filter_text = _query(request, "filter")
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
        top = int(_query(request, "top") or DEFAULT_PAGE_SIZE)
        skip = int(_query(request, "skip") or 0)
    except ValueError:
        raise GraphError(400, "BadRequest", "$top and $skip must be integers.") from None
    page = events[skip : skip + top]
    body: dict[str, Any] = {
        "@odata.context": f"{state.base_url}/v1.0/$metadata#users('{user_id}')/events",
        "value": [_shape_event(request, e) for e in page],
    }
    if skip + top < len(events):
        params = {k: v for k, v in request.query_params.items() if k not in ("$skip", "skip")}
        params["$skip"] = str(skip + top)
        query = "&".join(f"{quote(k)}={quote(v)}" for k, v in params.items())
        body["@odata.nextLink"] = f"{state.base_url}{request.url.path}?{query}"
    return JSONResponse(body, headers=_preference_headers(request))


@router.get("/users/{user_id}/events/{event_id}", name="graph.events.get")
@router.get("/users/{user_id}/calendar/events/{event_id}", name="graph.events.get")
async def get_event(user_id: str, event_id: str, request: Request) -> JSONResponse:
    _authorize(request, user_id, roles=CALENDAR_READ, meetings=False)
    event = _event_or_404(_state(request), user_id, event_id)
    return JSONResponse(_shape_event(request, event), headers=_preference_headers(request))


@router.patch("/users/{user_id}/events/{event_id}", name="graph.events.update")
@router.patch("/users/{user_id}/calendar/events/{event_id}", name="graph.events.update")
async def patch_event(user_id: str, event_id: str, request: Request) -> JSONResponse:
    _authorize(request, user_id, roles=CALENDAR_WRITE, meetings=False)
    state = _state(request)
    event = _event_or_404(state, user_id, event_id)
    update_event(state, event, await _json_object(request))
    return JSONResponse(_shape_event(request, event), headers=_preference_headers(request))


@router.delete("/users/{user_id}/events/{event_id}", name="graph.events.delete")
@router.delete("/users/{user_id}/calendar/events/{event_id}", name="graph.events.delete")
async def remove_event(user_id: str, event_id: str, request: Request) -> Response:
    _authorize(request, user_id, roles=CALENDAR_WRITE, meetings=False)
    state = _state(request)
    delete_event(state, _event_or_404(state, user_id, event_id))
    return Response(status_code=204)


@router.post("/users/{user_id}/events/{event_id}/cancel", name="graph.events.cancel")
@router.post("/users/{user_id}/calendar/events/{event_id}/cancel", name="graph.events.cancel")
async def cancel_event(user_id: str, event_id: str, request: Request) -> Response:
    """The organiser cancels: attendees get the comment, the event goes to Deleted Items."""
    _authorize(request, user_id, roles=CALENDAR_WRITE, meetings=False)
    state = _state(request)
    event = _event_or_404(state, user_id, event_id)
    body = await _json_object(request) if (await request.body()).strip() else {}
    comments = [v for k, v in body.items() if k.lower() == "comment"]
    unknown = [k for k in body if k.lower() != "comment"]
    if unknown or not all(isinstance(c, str) for c in comments):
        raise GraphError(400, "RequestBodyRead", "The cancel action takes only a 'Comment' string.")
    delete_event(state, event, cancel_comment=comments[0] if comments else "")
    return Response(status_code=202)


@router.get("/users/{user_id}/onlineMeetings", name="graph.onlineMeetings.list")
async def find_meetings(user_id: str, request: Request) -> JSONResponse:
    _authorize(request, user_id, roles=MEETINGS_READ, meetings=True)
    state = _state(request)
    filter_text = _query(request, "filter")
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
    return JSONResponse(
        {
            "@odata.context": f"{state.base_url}/v1.0/$metadata#users('{user_id}')/onlineMeetings",
            "value": [render_meeting(state, m) for m in found],
        }
    )


@router.get("/users/{user_id}/onlineMeetings/{meeting_id}", name="graph.onlineMeetings.get")
async def get_meeting(user_id: str, meeting_id: str, request: Request) -> JSONResponse:
    _authorize(request, user_id, roles=MEETINGS_READ, meetings=True)
    state = _state(request)
    meeting = _meeting_or_404(state, user_id, meeting_id)
    return JSONResponse(_meeting_body(state, user_id, meeting))


@router.patch("/users/{user_id}/onlineMeetings/{meeting_id}", name="graph.onlineMeetings.update")
async def patch_meeting(user_id: str, meeting_id: str, request: Request) -> JSONResponse:
    _authorize(request, user_id, roles=MEETINGS_WRITE, meetings=True)
    state = _state(request)
    meeting = _meeting_or_404(state, user_id, meeting_id)
    update_meeting(state, meeting, await _json_object(request))
    return JSONResponse(_meeting_body(state, user_id, meeting))


def _meeting_body(state: EmulatorState, user_id: str, meeting: StoredMeeting) -> dict[str, Any]:
    context = f"{state.base_url}/v1.0/$metadata#users('{user_id}')/onlineMeetings/$entity"
    return {"@odata.context": context, **render_meeting(state, meeting)}


# --- meeting artifacts: attendance reports and recordings (scripted by the control API) ---

_REPORTS = "/users/{user_id}/onlineMeetings/{meeting_id}/attendanceReports"
_RECORDINGS = "/users/{user_id}/onlineMeetings/{meeting_id}/recordings"


def _meeting_context(state: EmulatorState, user_id: str, meeting_id: str, tail: str) -> str:
    return (
        f"{state.base_url}/v1.0/$metadata#users('{user_id}')/onlineMeetings('{meeting_id}')/{tail}"
    )


@router.get(_REPORTS, name="graph.attendanceReports.list")
async def list_attendance_reports(user_id: str, meeting_id: str, request: Request) -> JSONResponse:
    _authorize(request, user_id, roles=ARTIFACTS_READ, meetings=True)
    state = _state(request)
    _meeting_or_404(state, user_id, meeting_id)
    reports = state.artifacts.list_reports(meeting_id, state.now())
    return JSONResponse(
        {
            "@odata.context": _meeting_context(state, user_id, meeting_id, "attendanceReports"),
            "value": [r.render(with_records=False) for r in reports],
        }
    )


@router.get(f"{_REPORTS}/{{report_id}}", name="graph.attendanceReports.get")
async def get_attendance_report(
    user_id: str, meeting_id: str, report_id: str, request: Request
) -> JSONResponse:
    _authorize(request, user_id, roles=ARTIFACTS_READ, meetings=True)
    state = _state(request)
    _meeting_or_404(state, user_id, meeting_id)
    report = state.artifacts.report(meeting_id, report_id)
    if report is None:
        raise GraphError(404, "NotFound", "The requested attendance report was not found.")
    # Records come only with $expand=attendanceRecords, as in Graph.
    expand = (_query(request, "expand") or "").replace(" ", "").split(",")
    context = _meeting_context(state, user_id, meeting_id, "attendanceReports")
    return JSONResponse(
        {
            "@odata.context": f"{context}(attendanceRecords())/$entity",
            **report.render(with_records="attendanceRecords" in expand),
        }
    )


@router.get(_RECORDINGS, name="graph.recordings.list")
async def list_recordings(user_id: str, meeting_id: str, request: Request) -> JSONResponse:
    _authorize(request, user_id, roles=RECORDINGS_READ, meetings=True)
    state = _state(request)
    _meeting_or_404(state, user_id, meeting_id)
    base = f"{state.base_url}/v1.0/users/{user_id}/onlineMeetings/{meeting_id}/recordings"
    recordings = state.artifacts.recordings.get(meeting_id, [])
    return JSONResponse(
        {
            "@odata.context": _meeting_context(state, user_id, meeting_id, "recordings"),
            "value": [r.render(f"{base}/{r.id}/content") for r in recordings],
        }
    )


@router.get(f"{_RECORDINGS}/{{recording_id}}/content", name="graph.recordings.content")
async def recording_content(
    user_id: str, meeting_id: str, recording_id: str, request: Request
) -> Response:
    # Served so that stats can show a client never downloads one (a call would count).
    _authorize(request, user_id, roles=RECORDINGS_READ, meetings=True)
    state = _state(request)
    _meeting_or_404(state, user_id, meeting_id)
    if state.artifacts.recording(meeting_id, recording_id) is None:
        raise GraphError(404, "NotFound", "The requested recording was not found.")
    return Response(content=b"\x00" * 16, media_type="video/mp4")
