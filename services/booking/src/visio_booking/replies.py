"""What the self-service pages share: the site they serve, and the answers more than one route
gives — a link that cannot be used (invalid, expired, replaced), a form refused, too many tries —
with the forms that lead to a fresh link."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Final

import asyncpg
from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from visio_runtime.pages import Pages
from visio_runtime.ratelimit import Limit, allow
from visio_runtime.service import Runtime
from visio_shared.links import PAGE_PATHS, LinkKeys, LinkPurpose, form_token

from visio_booking import forms, selfservice
from visio_booking.appointments import Context
from visio_booking.settings import BookingSettings

log = logging.getLogger("visio_booking.self_service")
PAGES = Pages("visio_booking")
HOUR = 3600

# The forms' actions, each with its own CSRF token; the first and last also name the email
# asked for (AppointmentLinkRequested.reason).
RESEND: Final = "resend"
CANCEL: Final = "cancel"
CORRECT: Final = "correct"
MOVE: Final = "move"
FRESH_LINK: Final = "fresh_link"


@dataclass(frozen=True)
class Site:
    """What the pages need, built once by create_app (only when link keys are set)."""

    settings: BookingSettings
    keys: LinkKeys
    ctx: Context
    runtime: Runtime

    @property
    def db(self) -> asyncpg.Pool:
        return self.runtime.db


def site_of(request: Request) -> Site:
    site: Site = request.app.state.self_service
    return site


def page_url(token: str) -> str:
    return PAGE_PATHS[LinkPurpose.MANAGE].format(token=token)


def back_to_page(token: str) -> Response:
    return RedirectResponse(page_url(token), status_code=303)


def relink(site: Site, token: str) -> dict[str, Any]:
    """The one-button form that asks for a fresh link with the link in hand."""
    return {"relink": token, "relink_token": form_token(site.keys, token, FRESH_LINK)}


def expired(site: Site, token: str) -> Response:
    return PAGES.render("expired.html", 410, **relink(site, token))


def replaced(site: Site, token: str) -> Response:
    return PAGES.render("replaced.html", 410, **relink(site, token))


def invalid(request: Request) -> Response:
    return address_form(request, "invalid.html", 404)


def address_form(
    request: Request, template: str, status_code: int = 200, **context: Any
) -> Response:
    """A page with the form that asks for a fresh link by email address (and its cookie)."""
    nonce, new = forms.address_nonce(request)
    context.setdefault("bad_address", False)
    response = PAGES.render(
        template,
        status_code,
        address_token=forms.address_form_token(site_of(request).keys, nonce),
        **context,
    )
    if new:
        forms.set_nonce_cookie(response, request, nonce)
    return response


def refused_form(fingerprint: str | None, back: str) -> Response:
    say("form refused (CSRF)", fingerprint)
    return PAGES.render(
        "refused.html",
        403,
        title="Cette demande n'a pas pu être prise en compte",
        reason="form",
        back=back,
    )


def too_many() -> Response:
    response = PAGES.render(
        "refused.html", 429, title="Trop de tentatives", reason="limit", back=None
    )
    response.headers["Retry-After"] = str(HOUR)
    return response


def too_soon(settings: BookingSettings) -> str:
    minutes = max(1, round(settings.resend_interval_s / 60))
    plural = "s" if minutes > 1 else ""
    return (
        f"Un message vous a déjà été envoyé il y a moins de {minutes} minute{plural} : regardez "
        "dans votre messagerie (et dans les courriers indésirables). Vous pourrez en demander "
        "un nouveau un peu plus tard."
    )


async def within_link_limit(site: Site, fingerprint: str) -> bool:
    """Count one more request on this link; False past `link_attempts_per_hour`."""
    limit = Limit(site.settings.link_attempts_per_hour, HOUR)
    allowed = await allow(site.db, selfservice.link_bucket(fingerprint), limit)
    if not allowed:
        say("over the limit", fingerprint)
    return allowed


def say(what: str, fingerprint: str | None) -> None:
    """One log line: what happened, and on which link by its fingerprint — never the link,
    never the person."""
    log.info("self-service: %s (link %s)", what, fingerprint or "-")
