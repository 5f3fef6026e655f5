"""The emulator's own control API under /_emulator (not Graph): inspect and steer it.

Tests and the ops/proof tools use it to see what a client really did to the "tenant"
(every event, deleted ones included; call counts; duplicates per idempotency key; the most
requests ever in flight per mailbox) and to switch on faults, restrict the access policy,
take a user's Teams licence away, change the join URL style, move the clock, or start afresh.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from visio_deploy.graph_emulator.events import render_event
from visio_deploy.graph_emulator.faults import FaultConfig
from visio_deploy.graph_emulator.meetings import render_meeting
from visio_deploy.graph_emulator.state import (
    AccessPolicy,
    EmulatorState,
    Mailbox,
    StoredEvent,
    normalize_ids,
)
from visio_deploy.graph_emulator.timezones import format_utc

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
    }


@router.get("/faults", name="_emulator.faults.get")
async def get_faults(request: Request) -> FaultConfig:
    return _state(request).faults.config


@router.post("/faults", name="_emulator.faults.set")
async def set_faults(config: FaultConfig, request: Request) -> FaultConfig:
    _state(request).faults.configure(config)
    return config


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
        teams_enabled=body.teams_enabled, audio_conferencing=body.audio_conferencing
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
