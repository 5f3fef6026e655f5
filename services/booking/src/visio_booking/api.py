"""Booking's HTTP API: the front door for the caf.fr portal, advisor tools and other systems.

Bodies are read by hand (their size limited while they arrive, then strict JSON, then the
shared models with the service's rules as validation context), so a Kafka request and an HTTP
call are checked the same way, and no body can make the API answer anything but a problem.
"""

from __future__ import annotations

import uuid
import zoneinfo
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import Response
from visio_runtime.bodies import read_json_body
from visio_runtime.problems import PROBLEM_JSON, Problem, invalid
from visio_shared import current_cgu
from visio_shared.booking_requests import (
    BookingRequest,
    CancelRequest,
    ContactCorrection,
    ReassignRequest,
    RescheduleRequest,
)

from visio_booking.appointments import Caller, Command, not_found
from visio_booking.auth import require
from visio_booking.contract import (
    AppointmentView,
    BookingAccepted,
    CguCurrent,
    HistoryEntry,
    ProblemDocument,
)
from visio_booking.intake import check_kept_key, execute
from visio_booking.openapi import ref, request_body
from visio_booking.settings import BookingSettings
from visio_booking.store import fetch_appointment

router = APIRouter()

PROBLEM = ref(ProblemDocument)
READ = "appointments:read"
WRITE = "appointments:write"


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    texts = {
        400: "The body is not JSON (or not UTF-8, starts with a byte-order mark, nests too deep)",
        401: "No, unknown or revoked API key",
        403: "The key lacks the scope",
        404: "No such appointment among the caller's",
        409: "The appointment is past or cancelled: it cannot change; or the advisor already "
        "has a live appointment overlapping that slot (advisor-unavailable)",
        413: "Body too large",
        422: "Invalid request (each invalid field is named, a key given twice too), or an "
        "Idempotency-Key reused",
    }
    return {
        status: {"description": texts[status], "content": {PROBLEM_JSON: {"schema": PROBLEM}}}
        for status in statuses
    }


ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "Accepted (or, for a repeated Idempotency-Key, the first answer again)",
        "headers": {
            "Idempotent-Replayed": {
                "description": "`true` when this is the stored answer to an earlier request",
                "schema": {"type": "string"},
            }
        },
    }
}

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Up to 255 printable characters, unique per request of this caller. "
        "Sent again with the same body, the first answer comes back and nothing happens twice; "
        "with another body, 422.",
    ),
]


@router.post(
    "/v1/appointments",
    status_code=202,
    response_model=BookingAccepted,
    responses={**ACCEPTED, **_problems(400, 401, 403, 409, 413, 422)},
    summary="Book a video appointment",
    openapi_extra=request_body(BookingRequest),
)
async def book(
    request: Request,
    # The key is checked by the booking's statement itself (visio_booking.intake).
    caller: Annotated[Caller, require(WRITE, checked_by_the_write=True)],
    idempotency_key: IdempotencyKey = None,
) -> Response:
    return await _run(request, caller, "BookAppointment", None, idempotency_key)


@router.post(
    "/v1/appointments/{appointment_id}/reschedule",
    status_code=202,
    response_model=BookingAccepted,
    responses={**ACCEPTED, **_problems(400, 401, 403, 404, 409, 413, 422)},
    summary="Move an appointment: a new start and/or duration, the same meeting link",
    openapi_extra=request_body(RescheduleRequest),
)
async def reschedule(
    request: Request,
    appointment_id: uuid.UUID,
    caller: Annotated[Caller, require(WRITE)],
    idempotency_key: IdempotencyKey = None,
) -> Response:
    return await _run(request, caller, "RescheduleAppointment", appointment_id, idempotency_key)


@router.post(
    "/v1/appointments/{appointment_id}/cancel",
    status_code=202,
    response_model=BookingAccepted,
    responses={**ACCEPTED, **_problems(400, 401, 403, 404, 409, 413, 422)},
    summary="Cancel an appointment, saying who asked",
    openapi_extra=request_body(CancelRequest),
)
async def cancel(
    request: Request,
    appointment_id: uuid.UUID,
    caller: Annotated[Caller, require(WRITE)],
    idempotency_key: IdempotencyKey = None,
) -> Response:
    return await _run(request, caller, "CancelAppointment", appointment_id, idempotency_key)


@router.patch(
    "/v1/appointments/{appointment_id}/contact",
    status_code=202,
    response_model=BookingAccepted,
    responses={**ACCEPTED, **_problems(400, 401, 403, 404, 409, 413, 422)},
    summary="Correct the person's contact details; the confirmation goes again",
    openapi_extra=request_body(ContactCorrection),
)
async def correct_contact(
    request: Request,
    appointment_id: uuid.UUID,
    caller: Annotated[Caller, require(WRITE)],
    idempotency_key: IdempotencyKey = None,
) -> Response:
    return await _run(request, caller, "CorrectContact", appointment_id, idempotency_key)


@router.post(
    "/v1/appointments/{appointment_id}/reassign",
    status_code=202,
    response_model=BookingAccepted,
    responses={**ACCEPTED, **_problems(400, 401, 403, 404, 409, 413, 422)},
    summary="Change the advisor: a new meeting and link, the old meeting cancelled",
    openapi_extra=request_body(ReassignRequest),
)
async def reassign(
    request: Request,
    appointment_id: uuid.UUID,
    caller: Annotated[Caller, require(WRITE)],
    idempotency_key: IdempotencyKey = None,
) -> Response:
    return await _run(request, caller, "ReassignAdvisor", appointment_id, idempotency_key)


@router.get(
    "/v1/appointments/{appointment_id}",
    response_model=AppointmentView,
    responses=_problems(401, 403, 404, 422),
    summary="Where an appointment stands, and its history",
)
async def read(
    request: Request,
    appointment_id: uuid.UUID,
    caller: Annotated[Caller, require(READ)],
) -> AppointmentView:
    row = await fetch_appointment(request.app.state.runtime.db, appointment_id)
    if row is None or not caller.owns(row):
        raise not_found(appointment_id)
    zone = zoneinfo.ZoneInfo(row["timezone"])  # times as the person lives them
    return AppointmentView(
        appointment_id=row["appointment_id"],
        status=row["status"],
        status_reason=row["status_reason"],
        revision=row["revision"],
        caf_code=row["caf_code"],
        start=row["start_at"].astimezone(zone),
        end=row["end_at"].astimezone(zone),
        duration_minutes=row["duration_minutes"],
        timezone=row["timezone"],
        subject=row["subject"],
        advisor={"id": row["advisor_id"], "display_name": row["advisor_name"]},
        join_url=row["join_url"],
        calling_system=row["calling_system"],
        history=[HistoryEntry(**entry) for entry in row["history"]],
    )


@router.get("/v1/cgu/current", response_model=CguCurrent, summary="The CGU to accept")
async def cgu(request: Request) -> CguCurrent:
    current = current_cgu()
    settings: BookingSettings = request.app.state.runtime.settings
    return CguCurrent(
        version=current.version, sha256=current.sha256, url=settings.cgu_url(current.version)
    )


async def _run(
    request: Request,
    caller: Caller,
    request_type: str,
    appointment_id: uuid.UUID | None,
    idempotency_key: str | None,
) -> Response:
    runtime = request.app.state.runtime
    try:
        command = Command(
            request_type=request_type,
            payload=await read_json_body(request, runtime.settings.max_body_bytes),
            appointment_id=appointment_id,
            idempotency_key=_checked(idempotency_key),
        )
    except Problem:
        await check_kept_key(runtime.db, caller)
        raise
    outcome = await execute(runtime.db, request.app.state.context, caller, command)
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else None
    return Response(
        outcome.json(), outcome.status_code, headers=headers, media_type="application/json"
    )


def _checked(key: str | None) -> str | None:
    if key is not None and not (0 < len(key) <= 255 and key.isprintable() and key.isascii()):
        raise invalid(
            [{"field": "Idempotency-Key", "message": "must be 1 to 255 printable ASCII characters"}]
        )
    return key
