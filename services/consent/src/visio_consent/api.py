"""Consent's HTTP API, for operators and the Caf's systems; every call needs an API key."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from aiokafka.errors import KafkaError
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, EmailStr
from visio_runtime.api_keys import KeyHolder
from visio_runtime.bodies import read_json_body
from visio_runtime.problems import PROBLEM_JSON, Problem
from visio_shared.checkpoints import Checkpoint

from visio_consent.access import AccessExport, Asker, access_export
from visio_consent.audit import verify_with_witnesses
from visio_consent.checkpoints import Checkpointer
from visio_consent.export import assemble
from visio_consent.keys import API_KEYS, CHECKPOINT, EXPORT, READ, WITHDRAW
from visio_consent.ledger import subject_ref
from visio_consent.settings import ConsentSettings
from visio_consent.verify import VerifyReport
from visio_consent.withdrawal import NothingToWithdraw, UnknownAppointment, withdraw_recording

router = APIRouter()

PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "content": {PROBLEM_JSON: {}}}
    for status, text in (
        (400, "The body is not JSON"),
        (401, "No or unknown API key"),
        (403, "The key lacks the scope"),
        (422, "Invalid request: each invalid field is named"),
    )
}


def _runtime(request: Request) -> Any:
    return request.app.state.runtime


def _checkpointer(request: Request) -> Checkpointer:
    checkpointer: Checkpointer = request.app.state.checkpointer
    return checkpointer


def require(scope: str) -> Any:
    return Depends(API_KEYS.authenticator(scope))


@router.get(
    "/v1/ledger/verify",
    tags=["ledger"],
    responses=PROBLEMS,
    summary="Walk the hash chain, check it against the signed checkpoints of the file and the "
    "topic and the unsigned tail against its ConsentRecorded events; name the first break "
    "(docs/consent-ledger.md)",
)
async def verify_ledger(request: Request, _: Annotated[KeyHolder, require(READ)]) -> VerifyReport:
    checkpointer = _checkpointer(request)
    try:
        async with _runtime(request).db.acquire() as conn:
            return await verify_with_witnesses(conn, checkpointer.settings, checkpointer.trusted)
    except KafkaError as exc:
        raise Problem(
            503,
            "broker-unreachable",
            "The checkpoint topic cannot be read",
            f"verification reads the checkpoint and consents topics: {type(exc).__name__}",
        ) from exc


@router.post(
    "/v1/ledger/checkpoints",
    status_code=201,
    response_model=Checkpoint,
    tags=["ledger"],
    responses={
        **PROBLEMS,
        200: {"description": "The head has not moved: the checkpoint that signs it already"},
        204: {"description": "The ledger is empty: nothing to sign"},
        409: {"description": "The chain does not verify: nothing signed"},
    },
    summary="Sign a checkpoint of the verified head now, if it moved (it changes no record)",
)
async def take_checkpoint(
    request: Request, response: Response, _: Annotated[KeyHolder, require(CHECKPOINT)]
) -> Any:
    runtime = _runtime(request)
    async with runtime.db.acquire() as conn:
        outcome = await _checkpointer(request).take(conn, runtime.broker)
    if not outcome.report.ok:
        raise Problem(
            409,
            "ledger-broken",
            "The ledger does not verify",
            outcome.report.describe(),
            report=outcome.report.model_dump(),
        )
    if outcome.checkpoint is None:
        return Response(status_code=204)
    if not outcome.signed:
        response.status_code = 200
    return outcome.checkpoint


class AccessRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    email: EmailStr


# Both person-wide calls take the person's address in the body (never in a URL, never logged).
_EMAIL_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": AccessRequest.model_json_schema()}},
    }
}


async def _person_of(request: Request) -> str:
    """The subject_ref of the address in the body. The email stays in this request: it is never
    logged, and only its HMAC is looked up."""
    settings: ConsentSettings = _runtime(request).settings
    wanted = AccessRequest.model_validate(await read_json_body(request, settings.max_body_bytes))
    return subject_ref(settings.subject_key.get_secret_value(), wanted.email)


@router.post(
    "/v1/access",
    tags=["right of access"],
    responses={
        **PROBLEMS,
        200: {"content": {"application/json": {}, "text/plain": {}}},
        413: {"description": "Body too large"},
    },
    summary="Every record of one person (CGU article 8), as JSON or, with Accept: text/plain, "
    "in French; the request itself is recorded (this key's name, when) and shown in every later "
    "export of that person",
    openapi_extra=_EMAIL_BODY,
)
async def right_of_access(
    request: Request, caller: Annotated[KeyHolder, require(READ)]
) -> Response:
    ref = await _person_of(request)
    async with _runtime(request).db.acquire() as conn:
        export: AccessExport = await access_export(
            conn, ref, Asker.api(caller.name), _checkpointer(request).latest()
        )
    if _prefers_text(request):
        return PlainTextResponse(export.text())
    return Response(export.model_dump_json(), media_type="application/json")


@router.post(
    "/v1/personal-data/export",
    tags=["right of access"],
    responses={
        **PROBLEMS,
        200: {"content": {"application/json": {}}},
        413: {"description": "Body too large"},
    },
    summary="Everything every service holds about one person, assembled from each service "
    "(a part that did not answer in time is named as missing); recorded in the ledger and "
    "shown in every later export of that person",
    openapi_extra=_EMAIL_BODY,
)
async def personal_data_export(
    request: Request, caller: Annotated[KeyHolder, require(EXPORT)]
) -> Response:
    ref = await _person_of(request)
    runtime = _runtime(request)
    whole = await assemble(
        runtime.db,
        runtime.broker,
        runtime.topics,
        runtime.settings,
        ref,
        Asker.api(caller.name),
        checkpoint=_checkpointer(request).latest(),
    )
    return Response(whole.model_dump_json(), media_type="application/json")


def _prefers_text(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/plain" in accept and "application/json" not in accept


class WithdrawalView(BaseModel):
    appointment_id: uuid.UUID
    withdrawn_at: datetime
    appended: bool
    seq: int
    hash: str
    event_id: uuid.UUID


@router.post(
    "/v1/appointments/{appointment_id}/recording-withdrawal",
    tags=["withdrawal"],
    status_code=201,
    responses={
        **PROBLEMS,
        200: {"description": "Already withdrawn: nothing appended, announced again"},
        404: {"description": "No consent is recorded for this appointment"},
        409: {"description": "The recording was refused: nothing to withdraw"},
    },
    summary="Withdraw the recording authorisation of an appointment",
)
async def withdraw(
    appointment_id: uuid.UUID,
    request: Request,
    response: Response,
    caller: Annotated[KeyHolder, require(WITHDRAW)],
) -> WithdrawalView:
    runtime = _runtime(request)
    try:
        done = await withdraw_recording(
            runtime.db, runtime.broker, runtime.topics, appointment_id, calling_system=caller.name
        )
    except UnknownAppointment as exc:
        raise Problem(404, "not-found", "Not Found", str(exc)) from exc
    except NothingToWithdraw as exc:
        raise Problem(409, "nothing-to-withdraw", "Nothing to withdraw", str(exc)) from exc
    if not done.appended:
        response.status_code = 200
    return WithdrawalView(
        appointment_id=appointment_id,
        withdrawn_at=done.event.withdrawn_at,
        appended=done.appended,
        seq=done.entry.seq,
        hash=done.entry.hash,
        event_id=done.event.event_id,
    )
