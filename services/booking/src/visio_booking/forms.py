"""The pages' forms: reading what a form posted, and the CSRF token of the one form that has no
link to bind its token to (« Recevoir un nouveau lien » with an email address).

That form's token is a signed double-submit: the browser holds a random nonce in a cookie that
only this site sets and that no other site's form sends (SameSite=Lax: kept when the person
arrives from their mailbox, withheld from a cross-site POST); the form carries the nonce's HMAC
under booking's address-form key (visio_shared.links.KeyPurpose). Nothing is stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

from fastapi import Request
from fastapi.responses import Response
from visio_runtime.bodies import read_form
from visio_shared.links import FRESH_LINK_PATH, KeyPurpose, LinkKeys

MAX_FORM_BYTES = 4096
NONCE_COOKIE = "visio_nouveau_lien"
_NONCE = re.compile(r"^[A-Za-z0-9_-]{22,64}$")


async def posted(request: Request) -> dict[str, str]:
    """The fields of a urlencoded form, first value of each; {} for anything else (too big, not
    a form): every action then refuses it for its missing token."""
    return await read_form(request, MAX_FORM_BYTES)


def address_nonce(request: Request) -> tuple[str, bool]:
    """The browser's nonce, or a new one (True: the cookie must be set)."""
    nonce = request.cookies.get(NONCE_COOKIE, "")
    if _NONCE.match(nonce):
        return nonce, False
    return secrets.token_urlsafe(24), True


def address_form_token(keys: LinkKeys, nonce: str) -> str:
    key_id, secret = keys.signing(KeyPurpose.ADDRESS_FORM)
    return f"{key_id}.{_mac(secret, nonce)}"


def check_address_form_token(keys: LinkKeys, request: Request, given: str) -> bool:
    nonce = request.cookies.get(NONCE_COOKIE, "")
    key_id, _, mac = given.partition(".")
    secret = keys.secret(key_id, KeyPurpose.ADDRESS_FORM)
    if not _NONCE.match(nonce) or secret is None:
        return False
    return hmac.compare_digest(mac, _mac(secret, nonce))


def set_nonce_cookie(response: Response, request: Request, nonce: str) -> None:
    response.set_cookie(
        NONCE_COOKIE,
        nonce,
        path=FRESH_LINK_PATH,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


def _mac(secret: bytes, nonce: str) -> str:
    digest = hmac.new(secret, b"address form\x00" + nonce.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()
