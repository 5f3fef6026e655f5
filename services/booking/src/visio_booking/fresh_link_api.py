"""« Recevoir un nouveau lien » (/nouveau-lien): with a link in hand — expired, replaced, or a
link of any page of ours — one button; without, the person's email address. The answer to an
address is the same whether it has appointments or not.

With a link to an appointment that has ended (past its end, or cancelled), the email is the
right of access alone, « Mes consentements » (notifications' `decide`): the page says so before
and after the button."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.background import BackgroundTask
from visio_runtime.ratelimit import Limit, allow
from visio_shared.links import (
    FRESH_LINK_PATH,
    InvalidLink,
    check_form_token,
    link_fingerprint,
    read_any_link,
)

from visio_booking import forms, selfservice
from visio_booking.replies import (
    FRESH_LINK,
    HOUR,
    PAGES,
    Site,
    address_form,
    invalid,
    refused_form,
    relink,
    say,
    site_of,
    too_many,
    too_soon,
    within_link_limit,
)
from visio_booking.selfservice import Phase, Sent

router = APIRouter(include_in_schema=False)

_ADDRESS = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


@router.get(FRESH_LINK_PATH)
async def fresh_link_page(request: Request) -> Response:
    site = site_of(request)
    token = request.query_params.get("lien")
    if not token:
        return address_form(request, "fresh_link.html", invalid_link=False)
    try:
        claims = read_any_link(site.keys, token)
    except InvalidLink:
        return address_form(request, "fresh_link.html", invalid_link=True)
    if not await within_link_limit(site, link_fingerprint(token)):
        return too_many()
    ended = await _ended(site, claims.appointment_id)
    return PAGES.render("fresh_link.html", **relink(site, token), invalid_link=False, ended=ended)


@router.post(FRESH_LINK_PATH)
async def fresh_link(request: Request) -> Response:
    site = site_of(request)
    form = await forms.posted(request)
    if "lien" in form:
        return await _for_link(request, site, form)
    if not forms.check_address_form_token(site.keys, request, form.get("jeton", "")):
        return refused_form(None, back=FRESH_LINK_PATH)
    email = form.get("email", "").strip()
    if len(email) > 254 or not _ADDRESS.match(email):
        return address_form(request, "fresh_link.html", 422, invalid_link=False, bad_address=True)
    limit = Limit(site.settings.fresh_link_emails_per_hour, HOUR)
    if not await allow(site.db, selfservice.address_bucket(site.keys, email), limit):
        say("fresh link by address: over the limit", None)
        return too_many()
    # Looked up once the answer is sent, so its timing cannot tell whether the address has
    # appointments; the answer is the same either way.
    response = PAGES.render("fresh_link_sent.html", title="Demande envoyée", by_address=True)
    response.background = BackgroundTask(
        selfservice.request_links_for_address,
        site.db,
        site.ctx.topics,
        email,
        site.settings.resend_interval_s,
    )
    return response


async def _for_link(request: Request, site: Site, form: dict[str, str]) -> Response:
    token = form["lien"]
    try:
        claims = read_any_link(site.keys, token)
    except InvalidLink:
        return invalid(request)
    fingerprint = link_fingerprint(token)
    if not await within_link_limit(site, fingerprint):
        return too_many()
    if not check_form_token(site.keys, token, FRESH_LINK, form.get("jeton", "")):
        return refused_form(fingerprint, back=f"{FRESH_LINK_PATH}?lien={token}")
    ended = await _ended(site, claims.appointment_id)
    sent = await selfservice.request_link(
        site.db, site.ctx.topics, claims.appointment_id, FRESH_LINK, site.settings.resend_interval_s
    )
    say(f"fresh link {sent.value}", fingerprint)
    if sent is Sent.UNKNOWN:
        return invalid(request)
    if sent is Sent.TOO_SOON:
        response = PAGES.render(
            "fresh_link_sent.html",
            429,
            title="Un message vous a déjà été envoyé",
            by_address=False,
            too_soon=too_soon(site.settings),
        )
        response.headers["Retry-After"] = str(site.settings.resend_interval_s)
        return response
    return PAGES.render(
        "fresh_link_sent.html",
        title="Nouveau lien envoyé",
        by_address=False,
        too_soon=None,
        ended=ended,
    )


async def _ended(site: Site, appointment_id: uuid.UUID) -> str | None:
    """'past' or 'cancelled' when the email will carry « Mes consentements » alone."""
    row = await selfservice.find(site.db, appointment_id)
    phase: Phase | None = None if row is None else selfservice.ended(row, datetime.now(UTC))
    return None if phase is None else phase.value
