"""The advisor's page, `/conseiller/rendez-vous/<id>`, linked from the Outlook event: who is
coming and how, and, once the appointment has begun, the form to say how it went — held, the
person did not come, technical failure — with an optional comment.

Only the appointment's advisor, signed in with Entra ID (advisor_signin), may see it: the `oid`
of their id_token must be the appointment's advisor id; anyone else gets a 403 page. The form
is a plain POST (JavaScript off works) with a CSRF token bound to the session and the
appointment, answered by a redirect (POST/redirect/GET).

The report sets the status (`held`, `no_show`, `failed_technical`), which Graph's attendance
report no longer moves (store._moves_status); goes into the history; leaves an
`AdvisorOutcomeReported` on appointments.v1 for consent's record of connections; and pushes the
outcome to the partner that booked it — all in one transaction.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any, get_args

import asyncpg
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from visio_shared import AdvisorOutcomeReported
from visio_shared.events import AdvisorOutcome

from visio_booking import store
from visio_booking.advisor_signin import (
    FLOW_COOKIE,
    FLOW_SECONDS,
    SESSION_COOKIE,
    AdvisorSession,
    AdvisorSignIn,
    SignInFailed,
)
from visio_booking.appointments import Context
from visio_booking.forms import posted
from visio_booking.outbox import enqueue
from visio_booking.outcomes import push_outcome
from visio_booking.page_view import when_text
from visio_booking.replies import PAGES

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

PAGE = "/conseiller/rendez-vous/{appointment_id}"
CALLBACK = "/conseiller/connexion"
OUTCOMES: dict[str, str] = {
    "held": "Le rendez-vous a eu lieu",
    "no_show": "La personne n'est pas venue",
    "failed_technical": "Échec technique (le rendez-vous n'a pas pu se tenir)",
}
assert set(OUTCOMES) == set(get_args(AdvisorOutcome))
DEVICES = {"computer": "ordinateur", "smartphone": "smartphone", "tablet": "tablette"}
MAX_COMMENT = 500


def _sign_in(request: Request) -> AdvisorSignIn:
    sign_in: AdvisorSignIn = request.app.state.advisor_sign_in
    return sign_in


def _context(request: Request) -> Context:
    ctx: Context = request.app.state.context
    return ctx


def _page(template: str, status: int = 200, **context: Any) -> Response:
    return PAGES.render(template, status, **context)


@router.get(PAGE)
async def advisor_page(request: Request, appointment_id: str, enregistre: str = "") -> Response:
    sign_in = _sign_in(request)
    session = sign_in.session(request)
    if session is None:
        auth_uri, flow = await sign_in.start(request.url.path)
        response = RedirectResponse(auth_uri, status_code=303)
        sign_in.set_cookie(response, FLOW_COOKIE, flow, FLOW_SECONDS)
        return response
    row = await _mine(request, appointment_id, session)
    if isinstance(row, Response):
        return row
    return _advisor_view(sign_in, session, row, saved=enregistre == "1")


@router.post(PAGE)
async def report(request: Request, appointment_id: str) -> Response:
    sign_in = _sign_in(request)
    session = sign_in.session(request)
    if session is None:  # signed out since: sign in again, the page comes back
        return RedirectResponse(request.url.path, status_code=303)
    form = await posted(request)
    outcome, comment = str(form.get("outcome", "")), str(form.get("comment", "")).strip()
    if not sign_in.check_csrf(session, appointment_id, str(form.get("csrf", ""))):
        return _page("advisor_refused.html", 403, title="Formulaire expiré", reason="csrf",
                     back=request.url.path)  # fmt: skip
    row = await _mine(request, appointment_id, session)
    if isinstance(row, Response):
        return row
    errors = []
    if outcome not in OUTCOMES:
        errors.append("Choisissez comment s'est passé le rendez-vous.")
    if len(comment) > MAX_COMMENT:
        errors.append(f"Le commentaire dépasse {MAX_COMMENT} caractères.")
    if errors:
        return _advisor_view(sign_in, session, row, errors=errors, comment=comment, status=422)
    if row["start_at"] > datetime.now(UTC):
        return _advisor_view(sign_in, session, row, status=409)
    await record_report(
        request.app.state.runtime.db, _context(request), row, session.oid, outcome, comment
    )
    return RedirectResponse(f"{request.url.path}?enregistre=1", status_code=303)


@router.get(CALLBACK)
async def signed_in(request: Request) -> Response:
    sign_in = _sign_in(request)
    try:
        session, back = await sign_in.finish(
            request.cookies.get(FLOW_COOKIE), dict(request.query_params)
        )
    except SignInFailed as failed:
        log.warning("advisor page: sign-in failed: %s", failed)
        return _page("advisor_refused.html", 400, title="Connexion impossible",
                     reason="sign_in", back=None)  # fmt: skip
    if not back.startswith("/conseiller/rendez-vous/"):
        back = "/conseiller/rendez-vous/"
    response = RedirectResponse(back, status_code=303)
    sign_in.set_cookie(
        response, SESSION_COOKIE, session, sign_in.settings.advisor_session_hours * 3600
    )
    response.delete_cookie(FLOW_COOKIE, path="/conseiller")
    return response


async def _mine(
    request: Request, appointment_id: str, session: AdvisorSession
) -> asyncpg.Record | Response:
    try:
        wanted = uuid.UUID(appointment_id)
    except ValueError:
        wanted = None
    row = None
    if wanted is not None:
        async with request.app.state.runtime.db.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM appointments WHERE appointment_id = $1", wanted
            )
    if row is None or row["erased_at"] is not None:
        return _page("advisor_refused.html", 404, title="Rendez-vous introuvable",
                     reason="unknown", back=None)  # fmt: skip
    if row["advisor_id"] != session.oid:
        log.info("advisor page: %s refused appointment %s (not theirs)", session.oid, wanted)
        return _page("advisor_refused.html", 403, title="Ce rendez-vous n'est pas le vôtre",
                     reason="not_yours", back=None)  # fmt: skip
    return row


def _advisor_view(
    sign_in: AdvisorSignIn,
    session: AdvisorSession,
    row: asyncpg.Record,
    *,
    saved: bool = False,
    errors: list[str] | None = None,
    comment: str = "",
    status: int = 200,
) -> Response:
    started = row["start_at"] <= datetime.now(UTC)
    return _page(
        "advisor.html",
        status,
        title="Votre rendez-vous Visio RDV",
        advisor_name=session.name,
        when=when_text(row),
        duration=row["duration_minutes"],
        subject=row["subject"],
        guest=f"{row['first_name']} {row['last_name'][:1].upper()}.",
        device=DEVICES.get(row["device"], row["device"]),
        recording=row["recording_authorised"],
        cancelled=row["status"] == "cancelled",
        can_report=started and row["status"] != "cancelled",
        not_yet=not started,
        reported=OUTCOMES.get(row["status"]) if row["outcome_reported_at"] else None,
        outcomes=OUTCOMES,
        chosen=row["status"] if row["outcome_reported_at"] else "",
        comment=comment or (row["outcome_comment"] or ""),
        max_comment=MAX_COMMENT,
        csrf=sign_in.csrf(session, str(row["appointment_id"])),
        saved=saved,
        errors=errors or [],
    )


async def record_report(
    pool: asyncpg.Pool,
    ctx: Context,
    row: asyncpg.Record,
    advisor_id: str,
    outcome: str,
    comment: str,
) -> AdvisorOutcomeReported:
    """Status, history, event and partner outcome of one report, in one transaction."""
    appointment_id = row["appointment_id"]
    async with pool.acquire() as conn, conn.transaction():
        locked = await store.lock_appointment(conn, appointment_id)
        event = AdvisorOutcomeReported(
            appointment_id=appointment_id,
            revision=locked["revision"],
            correlation_id=locked["correlation_id"],
            advisor_id=advisor_id,
            outcome=outcome,  # checked against OUTCOMES
            comment=comment or None,
            reported_at=datetime.now(UTC),
        )
        await conn.execute(
            "UPDATE appointments SET status = $2, status_reason = 'reported by the advisor', "
            "status_revision = revision, outcome_reported_by = $3, outcome_reported_at = $4, "
            "outcome_comment = $5, updated_at = now() WHERE appointment_id = $1",
            appointment_id,
            outcome,
            advisor_id,
            event.reported_at,
            event.comment,
        )
        await store.add_history(
            conn,
            appointment_id,
            "advisor_reported",
            locked["revision"],
            f"{outcome}, by advisor {advisor_id}",
            event.event_id,
        )
        await enqueue(conn, ctx.topics.appointments, event)
        await push_outcome(conn, ctx.topics, ctx.partners, appointment_id)
    log.info("advisor page: appointment %s reported %s", appointment_id, outcome)
    return event
