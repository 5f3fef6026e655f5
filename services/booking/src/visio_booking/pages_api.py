"""« Mon rendez-vous » over HTTP: the person's page and its two forms, « Recevoir à nouveau le
lien » and « Annuler le rendez-vous ». French pages for people, not an API for systems: they stay
out of the OpenAPI document, and exist only when link keys are set.

Every form carries a CSRF token bound to the link and the action; every request on a link counts
towards its rate limit; the logs name a link by its fingerprint only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from fastapi import APIRouter, Request
from fastapi.responses import Response
from visio_runtime.teams import join_url_allowed
from visio_shared.links import (
    PAGE_PATHS,
    ExpiredLink,
    InvalidLink,
    LinkClaims,
    LinkPurpose,
    check_form_token,
    form_token,
    link_fingerprint,
    read_link,
)

from visio_booking import forms, selfservice
from visio_booking.page_view import appointment_context, when_text
from visio_booking.replies import (
    CANCEL,
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
