"""The emulator's own control API under /_emulator (not Graph): inspect and steer it.

Tests and the ops/proof tools use it to see what a client really did to the "tenant"
(every event, deleted ones included; call counts; duplicates per idempotency key; the most
requests ever in flight per mailbox) and to switch on faults, restrict the access policy,
take a user's Teams licence away, change the join URL style, move the clock, or start afresh;
and to script what happened in a meeting: its attendance report and its recordings.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, Field

from visio_fakes.graph_emulator.artifacts import (
    OTHER_TENANT_ID,
    Attendee,
    Interval,
    ParticipantKind,
    Recording,
    Report,
)
from visio_fakes.graph_emulator.events import render_event
from visio_fakes.graph_emulator.faults import FaultConfig, ScriptedFaults
from visio_fakes.graph_emulator.meetings import render_meeting
from visio_fakes.graph_emulator.state import (
    AccessPolicy,
    EmulatorState,
    Mailbox,
    StoredEvent,
    StoredMeeting,
    normalize_ids,
)
from visio_fakes.graph_emulator.timezones import format_utc
from visio_fakes.graph_emulator.users import object_id, user_address

router = APIRouter(prefix="/_emulator")


class AccessPolicyBody(BaseModel):
    allowed_user_ids: list[str] | None = Field(
        description="Users the application may act for; null grants every user."
    )
    online_meetings_allowed_user_ids: list[str] | None = Field(
        default=None,
        description="A separate Teams policy for onlineMeetings; defaults to allowed_user_ids.",
    )
    separate_online_meetings_policy: bool = Field(
        default=False,
        description="Use online_meetings_allowed_user_ids even when it is null.",
    )


class MailboxBody(BaseModel):
    teams_enabled: bool = Field(
        default=True, description="False: online events of this user get no Teams meeting."
    )
    audio_conferencing: bool = Field(
        default=True, description="False: this user's meetings have no dial-in numbers."
    )
    exists: bool = Field(
        default=True,
        description="False: the tenant has no such user (Graph answers 404 ErrorInvalidUser), "
        "as for an object id that is not an advisor's.",
    )


class TenantBody(BaseModel):
    join_url_style: Literal["classic", "short"] = Field(
        description="Form of the join URLs of meetings created from now on."
    )


class ClockBody(BaseModel):
    advance_seconds: float = Field(ge=0, description="Move the emulator clock forward.")


def _state(request: Request) -> EmulatorState:
    state: EmulatorState = request.app.state.emulator
    return state


def _event_record(state: EmulatorState, event: StoredEvent) -> dict[str, Any]:
    meeting = state.meetings.get(event.online_meeting_id or "")
    return {
        "user_id": event.user_id,
        "event_id": event.id,
        "transaction_id": event.transaction_id,
        "external_id": state.external_id_of(event),
        "single_value_extended_properties": [
            {"id": k, "value": v} for k, v in event.extended_properties.items()
        ],
        "subject": event.fields.get("subject"),
        "start_utc": format_utc(event.start),
        "end_utc": format_utc(event.end),
        "join_url": meeting.join_web_url if meeting else None,
        "online_meeting_id": event.online_meeting_id,
        "created_at": format_utc(event.created_at),
        "updated_at": format_utc(event.updated_at),
        "deleted_at": format_utc(event.deleted_at) if event.deleted_at else None,
        "is_deleted": event.is_deleted,
        "cancel_comment": event.cancel_comment,
        "event": render_event(state, event, zone=None),
    }


@router.get("/events", name="_emulator.events")
async def events(request: Request) -> dict[str, Any]:
    state = _state(request)
    ordered = sorted(state.events.values(), key=lambda e: e.created_at)
    return {"value": [_event_record(state, e) for e in ordered]}


@router.get("/online-meetings", name="_emulator.online_meetings")
async def online_meetings(request: Request) -> dict[str, Any]:
    state = _state(request)
    return {
        "value": [
            {
                "user_id": m.user_id,
                "event_id": m.event_id,
                "is_deleted": m.deleted_at is not None,
                "meeting": render_meeting(state, m),
            }
            for m in state.meetings.values()
        ]
    }


@router.get("/stats", name="_emulator.stats")
async def stats(request: Request) -> dict[str, Any]:
    state = _state(request)
    all_events = list(state.events.values())
    per_transaction = Counter(e.transaction_id for e in all_events if e.transaction_id)
    per_external = Counter(
        value for e in all_events if (value := state.external_id_of(e)) is not None
    )
    live_per_external = Counter(
        value
        for e in all_events
        if not e.is_deleted and (value := state.external_id_of(e)) is not None
    )
    return {
        "calls": dict(state.stats.calls),
        "responses": {name: dict(codes) for name, codes in state.stats.responses.items()},
        "faults_injected": dict(state.faults.injected),
        "events_total": len(all_events),
        "events_live": sum(1 for e in all_events if not e.is_deleted),
        "events_deleted": sum(1 for e in all_events if e.is_deleted),
        "events_per_transaction_id": dict(per_transaction),
        "events_per_external_id": dict(per_external),
        "live_events_per_external_id": dict(live_per_external),
        "transaction_replays": dict(state.stats.transaction_replays),
        "online_meetings_total": len(state.meetings),
        "max_in_flight_per_mailbox": dict(state.stats.max_in_flight),
        "max_in_flight_total": state.stats.max_in_flight_total,
        "concurrency_throttled": dict(state.stats.concurrency_throttled),
        "connections": len(state.stats.connections),
        "batches": state.stats.batches,
        "batched_requests": state.stats.batched_requests,
        "outlook_requests_queued": state.stats.outlook_requests_queued,
        "attendee_messages": dict(state.stats.attendee_messages),
        "teams_blocks_removed": state.stats.teams_blocks_removed,
    }


@router.get("/faults", name="_emulator.faults.get")
async def get_faults(request: Request) -> FaultConfig:
    return _state(request).faults.config


@router.post("/faults", name="_emulator.faults.set")
async def set_faults(config: FaultConfig, request: Request) -> FaultConfig:
    """The faults in force, with the seed chosen when none was given."""
    faults = _state(request).faults
    faults.configure(config)
    return faults.config


@router.post("/faults/script", name="_emulator.faults.script", status_code=204)
async def script_faults(body: ScriptedFaults, request: Request) -> Response:
    """The next calls of one endpoint about one subject meet these outcomes, in order."""
    _state(request).faults.script(body)
    return Response(status_code=204)


@router.post("/access-policy", name="_emulator.access_policy")
async def set_access_policy(body: AccessPolicyBody, request: Request) -> dict[str, Any]:
    state = _state(request)
    calendar = normalize_ids(body.allowed_user_ids)
    separate = (
        body.separate_online_meetings_policy or body.online_meetings_allowed_user_ids is not None
    )
    meetings = normalize_ids(body.online_meetings_allowed_user_ids) if separate else calendar
    state.access_policy = AccessPolicy(calendar, meetings)
    return {
        "allowed_user_ids": sorted(calendar) if calendar is not None else None,
        "online_meetings_allowed_user_ids": sorted(meetings) if meetings is not None else None,
    }


@router.post("/users/{user_id}", name="_emulator.users.set")
async def set_mailbox(user_id: str, body: MailboxBody, request: Request) -> MailboxBody:
    _state(request).mailboxes[user_id.lower()] = Mailbox(
        teams_enabled=body.teams_enabled,
        audio_conferencing=body.audio_conferencing,
        exists=body.exists,
    )
    return body


@router.post("/tenant", name="_emulator.tenant.set")
async def set_tenant(body: TenantBody, request: Request) -> TenantBody:
    _state(request).join_url_style = body.join_url_style
    return body


@router.post("/clock", name="_emulator.clock")
async def advance_clock(body: ClockBody, request: Request) -> dict[str, Any]:
    state = _state(request)
    state.advance_clock(body.advance_seconds)
    return {"now": format_utc(state.now()), "offset_seconds": state.clock_offset.total_seconds()}


@router.post("/reset", name="_emulator.reset", status_code=204)
async def reset(request: Request) -> Response:
    _state(request).reset()
    return Response(status_code=204)


# --- what happened in a meeting -------------------------------------------------------------


class IntervalBody(BaseModel):
    join_offset_seconds: int = Field(description="Seconds after the meeting's scheduled start.")
    leave_offset_seconds: int


class ParticipantBody(BaseModel):
    kind: ParticipantKind = Field(
        description="organizer: the meeting's organiser; internal: another user of the tenant; "
        "external: a user of another tenant; anonymous: joined from the link, no account."
    )
    display_name: str = "Participant"
    email: str | None = None
    intervals: list[IntervalBody] = Field(min_length=1)


class AttendanceBody(BaseModel):
    participants: list[ParticipantBody]
    available_after_list_calls: int = Field(
        default=0, ge=0, description="List calls answered without the report first."
    )
    available_after_seconds: float = Field(
        default=0, ge=0, description="Not listed until the emulator clock moves this far."
    )


class RecordingBody(BaseModel):
    created_offset_seconds: int = Field(default=0, description="After the scheduled start.")
    duration_seconds: int = Field(default=600, ge=1)


class RecordingsBody(BaseModel):
    recordings: list[RecordingBody]


def _live_meeting(state: EmulatorState, meeting_id: str) -> StoredMeeting:
    meeting = state.meetings.get(meeting_id)
    if meeting is None:
        raise HTTPException(404, f"no online meeting {meeting_id}")
    return meeting


def _attendee(state: EmulatorState, meeting: StoredMeeting, body: ParticipantBody) -> Attendee:
    tenant = state.settings.tenant_id
    email: str | None
    home: str | None
    intervals = tuple(
        Interval(
            meeting.start + dt.timedelta(seconds=i.join_offset_seconds),
            meeting.start + dt.timedelta(seconds=i.leave_offset_seconds),
        )
        for i in body.intervals
    )
    if body.kind == "organizer":
        oid, email, home = object_id(meeting.user_id), user_address(state, meeting.user_id), tenant
    elif body.kind == "internal":
        oid = str(uuid.uuid4())
        email, home = body.email or f"{oid}@{state.settings.tenant_domain}", tenant
    elif body.kind == "external":
        oid, email, home = str(uuid.uuid4()), body.email, OTHER_TENANT_ID
    else:  # anonymous: Teams makes up an id for the session, and knows no address or tenant
        oid, email, home = str(uuid.uuid4()), None, None
    return Attendee(body.kind, oid, body.display_name, email, home, intervals)


@router.post("/online-meetings/{meeting_id}/attendance", name="_emulator.attendance.set")
async def script_attendance(
    meeting_id: str, body: AttendanceBody, request: Request
) -> dict[str, Any]:
    """Add the meeting's attendance report (a meeting held twice has two)."""
    state = _state(request)
    meeting = _live_meeting(state, meeting_id)
    delay = dt.timedelta(seconds=body.available_after_seconds)
    report = Report(
        id=str(uuid.uuid4()),
        attendees=[_attendee(state, meeting, p) for p in body.participants],
        fallback_start=meeting.start,
        fallback_end=meeting.end,
        hidden_list_calls=body.available_after_list_calls,
        available_at=state.now() + delay if body.available_after_seconds else None,
    )
    state.artifacts.reports.setdefault(meeting_id, []).append(report)
    return report.render(with_records=True)


@router.post("/online-meetings/{meeting_id}/recordings", name="_emulator.recordings.set")
async def script_recordings(
    meeting_id: str, body: RecordingsBody, request: Request
) -> dict[str, Any]:
    state = _state(request)
    meeting = _live_meeting(state, meeting_id)
    made = []
    for item in body.recordings:
        created = meeting.start + dt.timedelta(seconds=item.created_offset_seconds)
        recording = Recording(
            id=str(uuid.uuid4()),
            meeting_id=meeting_id,
            organizer_oid=object_id(meeting.user_id),
            tenant_id=state.settings.tenant_id,
            created=created,
            ended=created + dt.timedelta(seconds=item.duration_seconds),
            content_correlation_id=str(uuid.uuid4()),
        )
        state.artifacts.recordings.setdefault(meeting_id, []).append(recording)
        made.append(recording.render(""))
    return {"value": made}
