"""« Mon rendez-vous » over HTTP: the person's page and its forms, « Recevoir à nouveau le
lien », « Annuler le rendez-vous » and « Corriger mes coordonnées » (with the page the link
confirming a new address opens: visio_booking.corrections). French pages for people, not an
API for systems: they stay out of the OpenAPI document, and exist only when link keys are set.

Every form carries a CSRF token bound to the link and the action; every request on a link counts
towards its rate limit; the logs name a link by its fingerprint only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from fastapi import APIRouter, Request
from fastapi.responses import Response
from visio_runtime.teams import join_url_allowed
from visio_shared.links import (
    CONFIRM_ADDRESS_PATH,
    PAGE_PATHS,
    ExpiredLink,
    InvalidLink,
    LinkClaims,
    LinkPurpose,
    check_form_token,
    form_token,
    link_fingerprint,
    read_link,
    sign_link,
)

from visio_booking import corrections, forms, reschedule, selfservice
from visio_booking.page_view import appointment_context, when_text
from visio_booking.replies import (
    CANCEL,
    CORRECT,
    MOVE,
    PAGES,
    RESEND,
    Site,
    back_to_page,
    expired,
    invalid,
    page_url,
    refused_form,
    replaced,
    say,
    site_of,
    too_many,
    too_soon,
    within_link_limit,
)
from visio_booking.selfservice import Phase, Sent, Standing

router = APIRouter(include_in_schema=False)
PAGE = PAGE_PATHS[LinkPurpose.MANAGE]


@dataclass(frozen=True)
class Opened:
    """A current link and the appointment it opens."""

    token: str
    claims: LinkClaims
    row: asyncpg.Record
    fingerprint: str

    def phase(self) -> Phase:
        return selfservice.phase(self.row, datetime.now(UTC))


@router.get(PAGE)
async def appointment_page(request: Request, token: str) -> Response:
    opened = await _open(request, token)
    if isinstance(opened, Response):
        return opened
    return _appointment(site_of(request), opened)


@router.post(PAGE + "/renvoyer")
async def resend(request: Request, token: str) -> Response:
    site = site_of(request)
    opened = await _open_posted(request, token, RESEND)
    if isinstance(opened, Response):
        return opened
    joinable = join_url_allowed(opened.row["join_url"], site.settings.teams_url_allowlist)
    if opened.phase() not in (Phase.UPCOMING, Phase.STARTED) or not joinable:
        return back_to_page(token)  # the page offers nothing to send again
    sent = await selfservice.request_link(
        site.db,
        site.ctx.topics,
        opened.claims.appointment_id,
        RESEND,
        site.settings.resend_interval_s,
    )
    say(f"resend {sent.value}", opened.fingerprint)
    if sent is Sent.SENT:
        notice = ("success", "Un message avec le lien du rendez-vous vient de vous être envoyé.")
        return _appointment(site, opened, notice)
    notice = ("notice", too_soon(site.settings))
    response = _appointment(site, opened, notice, 429)
    response.headers["Retry-After"] = str(site.settings.resend_interval_s)
    return response


@router.get(PAGE + "/renvoyer")
async def after_resend(token: str) -> Response:
    """The address bar still shows the form's target after sending: reopened, it is the page."""
    return back_to_page(token)


@router.get(PAGE + "/annuler")
async def cancel_step(request: Request, token: str) -> Response:
    site = site_of(request)
    opened = await _open(request, token)
    if isinstance(opened, Response):
        return opened
    if opened.phase() is not Phase.UPCOMING:
        return back_to_page(token)
    return PAGES.render(
        "cancel.html",
        title="Annuler le rendez-vous",
        when=when_text(opened.row),
        advisor=opened.row["advisor_name"],
        page_url=page_url(token),
        cancel_token=form_token(site.keys, token, CANCEL),
    )


@router.post(PAGE + "/annuler")
async def cancel(request: Request, token: str) -> Response:
    site = site_of(request)
    opened = await _open_posted(request, token, CANCEL)
    if isinstance(opened, Response):
        return opened
    if opened.phase() is Phase.UPCOMING:
        try:
            done = await selfservice.cancel(
                site.db, site.ctx, opened.claims.appointment_id, opened.claims.revision
            )
        except selfservice.LinkReplaced:
            return replaced(site, token)
        say("cancelled" if done else "nothing left to cancel", opened.fingerprint)
    # Back to the page, which says it is cancelled: a second click lands there too.
    return back_to_page(token)


@router.get(PAGE + "/corriger")
async def correct_step(request: Request, token: str) -> Response:
    opened = await _upcoming(request, token)
    if isinstance(opened, Response):
        return opened
    return _correct_form(site_of(request), opened, dict(opened.row))


@router.post(PAGE + "/corriger")
async def correct(request: Request, token: str) -> Response:
    site = site_of(request)
    posted = await _upcoming_form(request, token, CORRECT)
    if isinstance(posted, Response):
        return posted
    opened, form = posted
    wanted = corrections.typed(form)
    if isinstance(wanted, list):
        return _correct_form(site, opened, form, wrong=wanted, status_code=422)
    valid = timedelta(hours=site.settings.contact_correction_valid_hours)
    try:
        asked = await corrections.ask(
            site.db, site.ctx, site.keys, opened.claims.appointment_id,
            opened.claims.revision, wanted, valid,
        )  # fmt: skip
    except selfservice.LinkReplaced:
        return replaced(site, token)
    say(f"correction {asked.value}", opened.fingerprint)
    if asked is corrections.Asked.TO_CONFIRM:
        notice = (
            "success",
            f"Un message vient de partir à {wanted.email}. Suivez son lien pour confirmer "
            "cette adresse ; d'ici là, nos messages arrivent à l'adresse actuelle.",
        )
        return _correct_form(site, opened, dict(opened.row), notice=notice)
    if asked is corrections.Asked.UNCHANGED:
        notice = ("notice", "Ce sont déjà vos coordonnées : rien n'a changé.")
        return _correct_form(site, opened, dict(opened.row), notice=notice)
    # Applied: the link's revision is now behind, so the page goes on with a fresh link.
    row = await selfservice.find(site.db, opened.claims.appointment_id)
    assert row is not None
    token = _signed(site, row)
    fresh = Opened(token, read_link(site.keys, token, LinkPurpose.MANAGE), row, opened.fingerprint)
    notice = ("success", "Votre nom est corrigé. Un message vous le confirme.")
    return _appointment(site, fresh, notice)


@router.get(PAGE + "/changer")
async def move_step(request: Request, token: str) -> Response:
    opened = await _upcoming(request, token)
    if isinstance(opened, Response):
        return opened
    return _move_form(site_of(request), opened, {})


@router.post(PAGE + "/changer")
async def move(request: Request, token: str) -> Response:
    """« Changer de créneau »: record what suits the person and pass it on; the appointment
    stays as it is until its owner moves it."""
    site = site_of(request)
    posted = await _upcoming_form(request, token, MOVE)
    if isinstance(posted, Response):
        return posted
    opened, form = posted
    wanted = reschedule.preferences(form)
    if isinstance(wanted, list):
        return _move_form(site, opened, form, wrong=wanted, status_code=422)
    asked = await reschedule.ask(
        site.db, site.ctx.topics, site.ctx.partners, opened.claims.appointment_id,
        opened.claims.revision, wanted,
    )  # fmt: skip
    say(f"reschedule request {asked.value}", opened.fingerprint)
    if asked is reschedule.Asked.GONE:
        return replaced(site, token)
    return PAGES.render(
        "moved.html", title="Votre demande est envoyée", page_url=page_url(token),
        when=when_text(opened.row), caf=site.settings.cafs().get(opened.row["caf_code"]).name,
    )  # fmt: skip


def _move_form(
    site: Site,
    opened: Opened,
    values: dict[str, str],
    *,
    wrong: list[str] | None = None,
    status_code: int = 200,
) -> Response:
    return PAGES.render(
        "reschedule.html",
        status_code,
        title="Changer de créneau",
        wrong=wrong or [],
        values=values,
        days=reschedule.DAYS,
        times=reschedule.TIME_LABELS,
        message_max=reschedule.RESCHEDULE_MESSAGE_MAX,
        when=when_text(opened.row),
        page_url=page_url(opened.token),
        move_token=form_token(site.keys, opened.token, MOVE),
    )


@router.get(CONFIRM_ADDRESS_PATH)
async def confirm_address_step(request: Request, code: str) -> Response:
    """A page with a button, not the confirmation itself: a mail scanner opening links must
    not confirm an address on the person's behalf."""
    if not await within_link_limit(site_of(request), link_fingerprint(code)):
        return too_many()
    action = CONFIRM_ADDRESS_PATH.format(code=code)
    return _confirm_page("ask", action=action)


@router.post(CONFIRM_ADDRESS_PATH)
async def confirm_address(request: Request, code: str) -> Response:
    site = site_of(request)
    fingerprint = link_fingerprint(code)
    if not await within_link_limit(site, fingerprint):
        return too_many()
    done = await corrections.confirm(site.db, site.ctx, code)
    say(f"address confirmation {done.outcome.value}", fingerprint)
    if done.outcome is not corrections.Confirmation.APPLIED:
        status = 409 if done.outcome is corrections.Confirmation.STALE else 404
        return _confirm_page(done.outcome.value, status_code=status)
    assert done.appointment_id is not None
    row = await selfservice.find(site.db, done.appointment_id)
    assert row is not None
    return _confirm_page("applied", page_url=page_url(_signed(site, row)))


def _confirm_page(state: str, status_code: int = 200, **values: str) -> Response:
    return PAGES.render(
        "confirm_address.html",
        status_code,
        title="Confirmer votre adresse email",
        state=state,
        **{"action": "", "page_url": "", **values},
    )


def _correct_form(
    site: Site,
    opened: Opened,
    values: dict[str, str],
    *,
    wrong: list[str] | None = None,
    notice: tuple[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    return PAGES.render(
        "correct.html",
        status_code,
        title="Corriger mes coordonnées",
        notice=notice,
        wrong=wrong or [],
        page_url=page_url(opened.token),
        correct_token=form_token(site.keys, opened.token, CORRECT),
        **{name: values.get(name, "") for name in ("first_name", "last_name", "email")},
    )


def _signed(site: Site, row: asyncpg.Record) -> str:
    """A « Mon rendez-vous » link for the appointment as it now stands, expiring when its
    emails' links do."""
    end = row["start_at"] + timedelta(minutes=row["duration_minutes"])
    expires_at = end + timedelta(days=site.settings.link_valid_days_after_appointment)
    return sign_link(
        site.keys, LinkPurpose.MANAGE, row["appointment_id"], row["revision"], expires_at
    )


async def _open(request: Request, token: str) -> Opened | Response:
    """The appointment a current « Mon rendez-vous » link opens, or the page saying why not."""
    site = site_of(request)
    try:
        claims = read_link(site.keys, token, LinkPurpose.MANAGE)
    except ExpiredLink:
        if not await within_link_limit(site, link_fingerprint(token)):
            return too_many()
        say("expired", link_fingerprint(token))
        return expired(site, token)
    except InvalidLink:
        return invalid(request)
    fingerprint = link_fingerprint(token)
    if not await within_link_limit(site, fingerprint):
        return too_many()
    row = await selfservice.find(site.db, claims.appointment_id)
    match selfservice.standing(row, claims.revision):
        case Standing.UNKNOWN:
            say("unknown appointment", fingerprint)
            return invalid(request)
        case Standing.REPLACED:
            say("replaced", fingerprint)
            return replaced(site, token)
    assert row is not None
    return Opened(token, claims, row, fingerprint)


async def _open_posted(request: Request, token: str, action: str) -> Opened | Response:
    """As `_open`, for a form posted from the page: its CSRF token must be the link's, for
    `action`."""
    opened = await _open(request, token)
    if isinstance(opened, Response):
        return opened
    form = await forms.posted(request)
    if not check_form_token(site_of(request).keys, token, action, form.get("jeton", "")):
        return refused_form(opened.fingerprint, back=page_url(token))
    return opened


async def _upcoming(request: Request, token: str) -> Opened | Response:
    """An upcoming appointment's page, opened; started, past or cancelled: back to the page,
    which says why (nothing is left to change)."""
    opened = await _open(request, token)
    if isinstance(opened, Response) or opened.phase() is Phase.UPCOMING:
        return opened
    return back_to_page(token)


async def _upcoming_form(
    request: Request, token: str, action: str
) -> tuple[Opened, dict[str, str]] | Response:
    """A form of an upcoming appointment's page, its CSRF token checked (refused: the page
    saying so; no longer upcoming: back to the page, which says why)."""
    opened = await _open(request, token)
    if isinstance(opened, Response):
        return opened
    form = await forms.posted(request)
    if not check_form_token(site_of(request).keys, token, action, form.get("jeton", "")):
        return refused_form(opened.fingerprint, back=page_url(token))
    if opened.phase() is not Phase.UPCOMING:
        return back_to_page(token)
    return opened, form


def _appointment(
    site: Site, opened: Opened, notice: tuple[str, str] | None = None, status_code: int = 200
) -> Response:
    return PAGES.render(
        "appointment.html",
        status_code,
        title="Mon rendez-vous",
        notice=notice,
        page_url=page_url(opened.token),
        resend_token=form_token(site.keys, opened.token, RESEND),
        **appointment_context(opened.row, opened.phase(), site.settings),
    )
