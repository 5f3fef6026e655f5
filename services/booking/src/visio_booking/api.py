"""Booking's HTTP API: the front door for the caf.fr portal, advisor tools and other systems."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from visio_shared import (
    Advisor,
    AppointmentRequested,
    ConsentGiven,
    Person,
    Topics,
    current_cgu,
)

from visio_booking.contract import (
    AppointmentView,
    BookingAccepted,
    BookingRequest,
    CguCurrent,
    HistoryEntry,
)
from visio_booking.keys import scopes_of
from visio_booking.problems import PROBLEM_JSON, Problem
from visio_booking.settings import BookingSettings
from visio_booking.store import enqueue, fetch_appointment, insert_appointment

router = APIRouter()
bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <api key>")

PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "content": {PROBLEM_JSON: {}}}
    for status, text in (
        (401, "No or unknown API key"),
        (403, "The key lacks the scope"),
        (413, "Body too large"),
        (422, "Invalid request: each invalid field is named"),
    )
}


def _runtime(request: Request) -> Any:
    return request.app.state.runtime


def require(scope: str) -> Any:
    async def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> str:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise Problem(401, "unauthorized", "Unauthorized", "send Authorization: Bearer <key>")
        scopes = await scopes_of(_runtime(request).db, credentials.credentials)
        if scopes is None:
            raise Problem(401, "unauthorized", "Unauthorized", "unknown or revoked API key")
        if scope not in scopes:
            raise Problem(403, "forbidden", "Forbidden", f"this key lacks the scope {scope!r}")
        return credentials.credentials

    return Depends(check)


@router.post(
    "/v1/appointments",
    status_code=202,
    response_model=BookingAccepted,
    responses=PROBLEM_RESPONSES,
    summary="Book a video appointment",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": BookingRequest.model_json_schema()}},
        }
    },
)
async def book(
    request: Request, _key: Annotated[str, require("appointments:write")]
) -> BookingAccepted:
    runtime = _runtime(request)
    settings: BookingSettings = runtime.settings
    body = await request.body()
    if len(body) > settings.max_body_bytes:
        raise Problem(
            413, "too-large", "Too Large", f"the body exceeds {settings.max_body_bytes} bytes"
        )
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise Problem(400, "malformed", "Malformed JSON", f"the body is not JSON: {exc}") from exc
    # A ValidationError becomes a 422 problem naming each field (problems.install).
    booking = BookingRequest.model_validate(
        payload,
        context={
            "horizon_days": settings.booking_horizon_days,
            "duration_bounds": (settings.min_duration_minutes, settings.max_duration_minutes),
        },
    )
    event = to_event(booking, channel="api", calling_system=request.headers.get("X-Caller", "api"))
    topics: Topics = runtime.topics
    async with runtime.db.acquire() as conn, conn.transaction():
        await insert_appointment(conn, event)
        await enqueue(conn, topics.appointments, event)
    request.app.state.outbox.wake()
    return BookingAccepted(appointment_id=event.appointment_id, status="requested")


def to_event(booking: BookingRequest, *, channel: str, calling_system: str) -> AppointmentRequested:
    appointment_id = uuid.uuid4()
    cgu = current_cgu()
    return AppointmentRequested(
        appointment_id=appointment_id,
        revision=1,
        correlation_id=appointment_id,
        caf_code=booking.caf_code,
        advisor=Advisor(id=booking.advisor.id, display_name=booking.advisor.display_name),
        start=booking.start,
        duration_minutes=booking.duration_minutes,
        timezone=booking.timezone,
        subject=booking.subject,
        user=Person(
            first_name=booking.user.first_name,
            last_name=booking.user.last_name,
            email=booking.user.email,
            device=booking.user.device,
        ),
        consent=ConsentGiven(
            cgu_version=booking.consent.cgu_version,
            cgu_sha256=cgu.sha256,
            accepted_at=booking.consent.accepted_at,
            recording_authorised=booking.consent.recording_authorised,
            channel=channel,
        ),
        calling_system=calling_system,
    )


@router.get(
    "/v1/appointments/{appointment_id}",
    response_model=AppointmentView,
    responses={404: {"description": "No such appointment", "content": {PROBLEM_JSON: {}}}},
    summary="Where an appointment stands",
)
async def read(
    request: Request,
    appointment_id: uuid.UUID,
    _key: Annotated[str, require("appointments:read")],
) -> AppointmentView:
    row = await fetch_appointment(_runtime(request).db, appointment_id)
    if row is None:
        raise Problem(404, "not-found", "Not Found", f"no appointment {appointment_id}")
    return AppointmentView(
        appointment_id=row["appointment_id"],
        status=row["status"],
        status_reason=row["status_reason"],
        revision=row["revision"],
        caf_code=row["caf_code"],
        start=row["start_at"],
        end=row["end_at"],
        duration_minutes=row["duration_minutes"],
        timezone=row["timezone"],
        subject=row["subject"],
        advisor={"id": row["advisor_id"], "display_name": row["advisor_name"]},
        join_url=row["join_url"],
        history=[HistoryEntry(**entry) for entry in row["history"]],
    )


@router.get("/v1/cgu/current", response_model=CguCurrent, summary="The CGU to accept")
async def cgu(request: Request) -> CguCurrent:
    current = current_cgu()
    settings: BookingSettings = _runtime(request).settings
    return CguCurrent(version=current.version, sha256=current.sha256, url=settings.cgu_url)
