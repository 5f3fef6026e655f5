"""The self-service pages, reached from the signed links in every email: « Enregistrement »
(the recording choice of one appointment, and withdrawing it before the appointment starts) and
« Mes consentements » (the person's records with their proof elements, and their JSON export).

Server-rendered French HTML, no JavaScript. Not in the OpenAPI document: they are pages for
people, not an API. Logs name a link by its fingerprint only, never the link or the person.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import asyncpg
from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from visio_runtime.bodies import read_form
from visio_runtime.pages import PAGE_HEADERS, Pages
from visio_runtime.ratelimit import Limit
from visio_runtime.service import Runtime
from visio_shared.links import (
    FRESH_LINK_PATH,
    PAGE_PATHS,
    LinkKeys,
    LinkPurpose,
    check_form_token,
    form_token,
    link_fingerprint,
)

from visio_consent.access import (
    HOW_TO_VERIFY,
    AccessExport,
    Asker,
    access_export,
    channel,
    french_date,
    french_datetime,
    plain,
    record_details,
    record_title,
    sealed,
    summary,
)
from visio_consent.caf_view import caf_view
from visio_consent.checkpoints import Checkpointer
from visio_consent.export import PersonalDataExport, assemble
from visio_consent.export_view import everything_view
from visio_consent.self_service import (
    WITHDRAW_ACTION,
    Choice,
    LinkedAppointment,
    LinkRefused,
    RecordingState,
    Refusal,
    open_link,
    recording_state,
    withdraw_from_page,
)
from visio_consent.settings import ConsentSettings

log = logging.getLogger(__name__)

HOUR_S = 3600


@dataclass(frozen=True)
class _Refused:
    status: int
    title: str
    message: str
    advice: str
    action: str  # the button's label
    retry_after: int | None = None


_REFUSED = {
    Refusal.INVALID: _Refused(
        404,
        "Ce lien n'est pas valide",
        "Ce lien ne permet pas d'ouvrir cette page. Il a peut-être été copié en partie, ou il "
        "n'est plus en service.",
        "Vous pouvez recevoir un nouveau lien par courriel, à l'adresse donnée pour votre "
        "rendez-vous.",
        "Recevoir un nouveau lien",
    ),
    Refusal.EXPIRED: _Refused(
        410,
        "Ce lien a expiré",
        "Pour protéger vos informations, les liens de nos courriels ne servent que pendant un "
        "temps limité.",
        "Demandez un nouveau lien : il vous sera envoyé par courriel.",
        "Recevoir un nouveau lien",
    ),
    Refusal.REPLACED: _Refused(
        410,
        "Ce lien a été remplacé",
        "L'adresse électronique de ce rendez-vous a été corrigée après l'envoi de ce lien : il "
        "ne donne plus accès à ces informations.",
        "Les nouveaux liens sont envoyés à l'adresse corrigée : vous pouvez en demander un.",
        "Recevoir un nouveau lien",
    ),
    Refusal.UPDATING: _Refused(
        503,
        "Page en cours de mise à jour",
        "Votre rendez-vous vient d'être modifié, et cette page n'est pas encore à jour.",
        "Réessayez dans quelques minutes avec le même lien.",
        "Réessayer",
        retry_after=60,
    ),
    Refusal.TOO_MANY: _Refused(
        429,
        "Trop de tentatives",
        "Ce lien a été utilisé trop de fois en peu de temps. Pour protéger vos informations, il "
        "est bloqué pour le moment.",
        "Réessayez dans une heure avec le même lien.",
        "Réessayer",
        retry_after=HOUR_S,
    ),
    Refusal.FORBIDDEN: _Refused(
        403,
        "Demande refusée",
        "Votre demande n'a pas pu être vérifiée : rien n'a été modifié.",
        "Revenez à la page et recommencez.",
        "Revenir à la page",
    ),
    Refusal.UNAVAILABLE: _Refused(
        503,
        "Votre demande n'a pas pu aboutir",
        "Un problème technique nous empêche de terminer votre demande pour le moment.",
        "Réessayez dans quelques minutes depuis la page « Enregistrement ».",
        "Revenir à la page",
        retry_after=60,
    ),
}

_CHOICE_TONE = {Choice.AUTHORISED: "notice", Choice.REFUSED: "notice", Choice.WITHDRAWN: "success"}


@dataclass(frozen=True)
class ConsentPagesDeps:
    """What the pages need beside the runtime: the settings, the link keys they check links
    against, their templates, the links' rate limit and booking's fresh-link page."""

    settings: ConsentSettings
    keys: LinkKeys
    pages: Pages
    limit: Limit
    fresh_link: str


def pages_deps(settings: ConsentSettings, keys: LinkKeys) -> ConsentPagesDeps:
    return ConsentPagesDeps(
        settings=settings,
        keys=keys,
        pages=Pages("visio_consent"),
        limit=Limit(settings.link_attempts_per_hour, HOUR_S),
        fresh_link=settings.booking_public_url.rstrip("/") + FRESH_LINK_PATH,
    )


router = APIRouter(include_in_schema=False)
_RECORDING_PATH = PAGE_PATHS[LinkPurpose.RECORDING]
_CONSENTS_PATH = PAGE_PATHS[LinkPurpose.CONSENTS]


def _deps(request: Request) -> ConsentPagesDeps:
    deps: ConsentPagesDeps = request.app.state.pages_deps
    return deps


Page = Callable[[Request, str], Awaitable[Response]]


def _link_page(path: str) -> Callable[[Page], Page]:
    """A page reached by a signed link (`path`, the token in it): a refused link, wherever the
    handler finds it out, answers the refusal page, whose button leads back to `path`."""

    def wrap(handler: Page) -> Page:
        @functools.wraps(handler)
        async def page(request: Request, token: str) -> Response:
            try:
                return await handler(request, token)
            except LinkRefused as exc:
                return _refused(_deps(request), exc.refusal, token, path.format(token=token))

        return page

    return wrap


@router.get("/enregistrement/{token}")
@_link_page(_RECORDING_PATH)
async def recording(request: Request, token: str) -> Response:
    deps, page = _deps(request), _RECORDING_PATH.format(token=token)
    _, state = await _state_of(request, deps, token)
    return deps.pages.render(
        "recording.html",
        title="Enregistrement de votre rendez-vous",
        page=page,
        **_recording_view(state),
        **caf_view(deps.settings.cafs(), state.appointment.caf_code),
    )


@router.get("/enregistrement/{token}/retirer")
@_link_page(_RECORDING_PATH)
async def confirm_withdrawal(request: Request, token: str) -> Response:
    deps, page = _deps(request), _RECORDING_PATH.format(token=token)
    _, state = await _state_of(request, deps, token)
    if not state.withdrawable:
        return _see_other(page)
    return deps.pages.render(
        "withdraw.html",
        title="Retirer votre autorisation d'enregistrement",
        page=page,
        csrf=form_token(deps.keys, token, WITHDRAW_ACTION),
        **_recording_view(state),
    )


@router.post("/enregistrement/{token}/retirer")
@_link_page(_RECORDING_PATH)
async def withdraw(request: Request, token: str) -> Response:
    deps, page = _deps(request), _RECORDING_PATH.format(token=token)
    fingerprint = link_fingerprint(token)
    runtime, state = await _state_of(request, deps, token)
    posted = (await read_form(request, deps.settings.max_body_bytes)).get("csrf", "")
    if not check_form_token(deps.keys, token, WITHDRAW_ACTION, posted):
        log.warning("consent: link %s posted a form without its token", fingerprint)
        raise LinkRefused(Refusal.FORBIDDEN)
    try:
        done = await withdraw_from_page(runtime.db, runtime.broker, runtime.topics, state)
    except Exception:  # the sweep announces what committed; the person may retry
        log.exception("consent: withdrawal from link %s failed", fingerprint)
        raise LinkRefused(Refusal.UNAVAILABLE) from None
    if done:
        log.info("consent: recording authorisation withdrawn from link %s", fingerprint)
    return _see_other(page)


@router.get("/mes-consentements/{token}")
@_link_page(_CONSENTS_PATH)
async def consents(request: Request, token: str) -> Response:
    deps, page = _deps(request), _CONSENTS_PATH.format(token=token)
    linked, export = await _export_of(request, deps, token)
    return deps.pages.render(
        "consents.html",
        title="Mes consentements",
        export_url=f"{page}/export.json",
        everything_url=f"{page}/mes-donnees",
        **_consents_view(linked, export),
        **caf_view(deps.settings.cafs(), linked.caf_code),
    )


@router.get("/mes-consentements/{token}/export.json")
@_link_page(_CONSENTS_PATH)
async def consents_export(request: Request, token: str) -> Response:
    deps = _deps(request)
    _, export = await _export_of(request, deps, token)
    return _attachment(export.model_dump_json(), "mes-consentements-visio-rdv.json")


@router.get("/mes-consentements/{token}/mes-donnees")
@_link_page(_CONSENTS_PATH)
async def everything(request: Request, token: str) -> Response:
    deps, page = _deps(request), _CONSENTS_PATH.format(token=token)
    whole = await _whole_export_of(request, deps, token)
    return deps.pages.render(
        "everything.html",
        title="Toutes mes données",
        back_url=page,
        json_url=f"{page}/mes-donnees.json",
        **everything_view(whole),
    )


@router.get("/mes-consentements/{token}/mes-donnees.json")
@_link_page(_CONSENTS_PATH)
async def everything_json(request: Request, token: str) -> Response:
    deps = _deps(request)
    whole = await _whole_export_of(request, deps, token)
    return _attachment(whole.model_dump_json(), "mes-donnees-visio-rdv.json")


def _refused(deps: ConsentPagesDeps, refusal: Refusal, token: str, page: str) -> Response:
    shown = _REFUSED[refusal]
    # Booking's fresh-link page sends one, to the appointment's current address, for a link
    # it can read (expired or replaced); for any other, it asks for the address.
    with_link = f"{deps.fresh_link}?{urlencode({'lien': token})}"
    action = {
        Refusal.INVALID: deps.fresh_link,
        Refusal.EXPIRED: with_link,
        Refusal.REPLACED: with_link,
    }.get(refusal, page)
    log.info("consent: link %s refused: %s", link_fingerprint(token), refusal.value)
    response = deps.pages.render(
        "refused.html",
        shown.status,
        title=shown.title,
        message=shown.message,
        advice=shown.advice,
        action=shown.action,
        action_url=action,
    )
    if shown.retry_after:
        response.headers["Retry-After"] = str(shown.retry_after)
    return response


async def _state_of(
    request: Request, deps: ConsentPagesDeps, token: str
) -> tuple[Runtime, RecordingState]:
    runtime: Runtime = request.app.state.runtime
    async with runtime.db.acquire() as conn:
        linked = await open_link(conn, deps.keys, token, LinkPurpose.RECORDING, deps.limit)
        return runtime, await recording_state(conn, linked)


async def _whole_export_of(
    request: Request, deps: ConsentPagesDeps, token: str
) -> PersonalDataExport:
    runtime: Runtime = request.app.state.runtime
    async with runtime.db.acquire() as conn:
        linked = await _consents_link(conn, deps, token)
    checkpointer: Checkpointer = request.app.state.checkpointer
    whole = await assemble(
        runtime.db,
        runtime.broker,
        runtime.topics,
        deps.settings,
        linked.subject_ref,
        Asker.person(),
        checkpoint=checkpointer.latest(),
        linked=linked.appointment_id,
    )
    log.info(
        "consent: export %s from link %s (%s)",
        whole.export_id,
        link_fingerprint(token),
        "complete" if whole.complete else "incomplete",
    )
    return whole


async def _export_of(
    request: Request, deps: ConsentPagesDeps, token: str
) -> tuple[LinkedAppointment, AccessExport]:
    runtime: Runtime = request.app.state.runtime
    async with runtime.db.acquire() as conn:
        linked = await _consents_link(conn, deps, token)
        checkpointer: Checkpointer = request.app.state.checkpointer
        export = await access_export(
            conn, linked.subject_ref, Asker.person(), checkpointer.latest()
        )
        return linked, export


async def _consents_link(
    conn: asyncpg.Connection, deps: ConsentPagesDeps, token: str
) -> LinkedAppointment:
    """The « Mes consentements » link, opened; refused while consent has not yet caught up with
    a change of the appointment (the person it knows may be the old address's)."""
    linked = await open_link(conn, deps.keys, token, LinkPurpose.CONSENTS, deps.limit)
    if linked.ahead:
        raise LinkRefused(Refusal.UPDATING)
    return linked


def _attachment(body: str, filename: str) -> Response:
    disposition = f'attachment; filename="{filename}"'
    return Response(
        body,
        media_type="application/json",
        headers={**PAGE_HEADERS, "Content-Disposition": disposition},
    )


def _see_other(path: str) -> Response:
    return RedirectResponse(path, status_code=303, headers=PAGE_HEADERS)


def _recording_view(state: RecordingState) -> dict[str, Any]:
    appointment = state.appointment
    zone = appointment.timezone
    starts_at = appointment.starts_at
    return {
        "starts": french_datetime(starts_at, zone) if starts_at else None,
        "cancelled": appointment.cancelled_at is not None,
        "started": state.started,
        "choice": state.choice.value,
        "tone": _CHOICE_TONE[state.choice],
        "decided": french_datetime(state.decided_at, zone),
        "withdrawable": state.withdrawable,
    }


def _consents_view(linked: LinkedAppointment, export: AccessExport) -> dict[str, Any]:
    zone = export.records[-1].timezone if export.records else linked.timezone
    records = [
        {
            "title": record_title(item),
            "when": item.when,
            "appointment_id": item.appointment_id,
            "appointment": item.appointment,
            "this_appointment": item.appointment_id == linked.appointment_id,
            "plain": plain(item),
            "channel": channel(item),
            "details": record_details(item, export.subject_ref),
            "sealed": sealed(item, export.checkpoint),
            "seq": item.seq,
            "hash": item.hash,
            "prev_hash": item.prev_hash,
        }
        for item in export.records
    ]
    kept = [
        {
            "name": f"{data.first_name} {data.last_name}",
            "email": data.email,
            "until": french_date(data.retain_until, zone),
            "this_appointment": data.appointment_id == linked.appointment_id,
        }
        for data in export.personal_data
    ]
    return {
        "records": records,
        "kept": kept,
        "asked": [seen.describe() for seen in export.access_requests],
        "summary": summary(export),
        "subject_ref": export.subject_ref,
        "how_to_verify": HOW_TO_VERIFY,
        "checkpoint": export.checkpoint,
    }
