"""`/r/<code>`: the short link a text message carries, to « Mon rendez-vous ».

The code (`visio_shared.links.short_code`) names the appointment by the first bytes of its id
and proves itself with an HMAC under the « Mon rendez-vous » key; nothing maps codes to links in
a table, so notifications, which writes the texts, never writes to booking. A good code is
answered with a redirect (303) to the page, through a link signed now for the appointment as it
stands and expiring when an email's does (`link_valid_days_after_appointment` after its end);
past that, the short link is expired too, and says so. Tries are counted per client address
(a keyed hash of it: no address is stored), so codes cannot be guessed at speed.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from visio_runtime.ratelimit import Limit, allow
from visio_shared.links import (
    SHORT_LINK_PATH,
    KeyPurpose,
    LinkPurpose,
    page_url,
    short_code_matches,
    short_code_prefix,
    sign_link,
)

from visio_booking.replies import HOUR, invalid, say, site_of, too_many

router = APIRouter(include_in_schema=False)


def _prefix_range(prefix: bytes) -> tuple[uuid.UUID, uuid.UUID]:
    rest = 16 - len(prefix)
    return uuid.UUID(bytes=prefix + b"\x00" * rest), uuid.UUID(bytes=prefix + b"\xff" * rest)


@router.get(SHORT_LINK_PATH)
async def short_link(request: Request, code: str) -> Response:
    site = site_of(request)
    client = request.client.host if request.client else "-"
    _, secret = site.keys.signing(KeyPurpose.ADDRESS_FORM)
    bucket = "r:" + hmac.new(secret, client.encode(), hashlib.sha256).hexdigest()[:32]
    if not await allow(site.db, bucket, Limit(site.settings.short_link_attempts_per_hour, HOUR)):
        say("short link: over the limit", None)
        return too_many()
    prefix = short_code_prefix(code)
    if prefix is None:
        return invalid(request)
    low, high = _prefix_range(prefix)
    rows = await site.db.fetch(
        "SELECT appointment_id, revision, start_at, duration_minutes FROM appointments "
        "WHERE appointment_id BETWEEN $1 AND $2",
        low,
        high,
    )
    for row in rows:
        if not short_code_matches(site.keys, code, row["appointment_id"]):
            continue
        end = row["start_at"] + timedelta(minutes=row["duration_minutes"])
        expires_at = end + timedelta(days=site.settings.link_valid_days_after_appointment)
        if datetime.now(UTC) >= expires_at:
            say("short link: expired", None)
            return invalid(request)
        token = sign_link(
            site.keys, LinkPurpose.MANAGE, row["appointment_id"], row["revision"], expires_at
        )
        say("short link: opened", None)
        return RedirectResponse(page_url("", LinkPurpose.MANAGE, token), status_code=303)
    return invalid(request)
