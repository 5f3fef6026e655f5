"""`POST /v1/erasures` and `GET /v1/erasures/{id}`: a Caf operator's erasure of a person's data
in every service, with the `personal-data:erase` scope (which `appointments:admin` does not
imply: reading everyone's appointments is not erasing anyone)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from visio_runtime.bodies import read_json_body
from visio_runtime.problems import PROBLEM_JSON, Problem

from visio_booking.appointments import Caller
from visio_booking.auth import require
from visio_booking.contract import ErasureRequest
from visio_booking.erasure import NothingToErase, erasure_status, request_erasure
from visio_booking.keys import ERASE
from visio_booking.openapi import request_body

router = APIRouter(tags=["personal data"])


class ErasureAccepted(BaseModel):
    erasure_id: uuid.UUID
    appointment_ids: list[uuid.UUID]


class ErasureView(BaseModel):
    erasure_id: uuid.UUID
    reason: str
    requested_by: str
    requested_at: datetime
    complete: bool
    waiting_for: list[str] = Field(description="The services that have not confirmed yet.")
    appointments: dict[uuid.UUID, dict[str, datetime | None]] = Field(
        description="Per appointment, per service: when it confirmed (null: not yet)."
    )


_PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "content": {PROBLEM_JSON: {}}}
    for status, text in (
        (401, "No, unknown or revoked API key"),
        (403, "The key lacks the scope personal-data:erase"),
        (404, "Nothing to erase, or no such erasure"),
        (422, "Invalid request: each invalid field is named"),
    )
}


@router.post(
    "/v1/erasures",
    status_code=202,
    response_model=ErasureAccepted,
    responses=_PROBLEMS,
    summary="Erase a person's data in every service (docs/personal-data.md)",
    openapi_extra=request_body(ErasureRequest),
)
async def erase(request: Request, caller: Annotated[Caller, require(ERASE)]) -> ErasureAccepted:
    runtime = request.app.state.runtime
    wanted = ErasureRequest.model_validate(
        await read_json_body(request, runtime.settings.max_body_bytes)
    )
    async with runtime.db.acquire() as conn:
        try:
            done = await request_erasure(
                conn,
                runtime.topics,
                reason=wanted.reason,
                requested_by=caller.name,
                email=str(wanted.email) if wanted.email else None,
                appointment_id=wanted.appointment_id,
            )
        except NothingToErase as exc:
            raise Problem(404, "nothing-to-erase", "Nothing to erase", str(exc)) from exc
    return ErasureAccepted(erasure_id=done.erasure_id, appointment_ids=done.appointment_ids)


@router.get(
    "/v1/erasures/{erasure_id}",
    response_model=ErasureView,
    responses=_PROBLEMS,
    summary="Which services have confirmed an erasure, and which have not",
)
async def status(
    request: Request, erasure_id: uuid.UUID, _: Annotated[Caller, require(ERASE)]
) -> ErasureView:
    async with request.app.state.runtime.db.acquire() as conn:
        found = await erasure_status(conn, erasure_id)
    if found is None:
        raise Problem(404, "not-found", "Not Found", f"no erasure {erasure_id}")
    return ErasureView(
        erasure_id=found.erasure_id,
        reason=found.reason,
        requested_by=found.requested_by,
        requested_at=found.requested_at,
        complete=found.complete,
        waiting_for=found.waiting_for,
        appointments=found.confirmations,
    )
