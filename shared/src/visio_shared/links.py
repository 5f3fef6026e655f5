"""Signed self-service links: the contract between the emails (notifications signs) and the pages
(booking and consent read).

A link token is opaque and short: base64url of a version, the signing key's id, the purpose, the
appointment id, its revision and the expiry, followed by a truncated HMAC-SHA256. It carries no
personal data. It is good for one purpose and one appointment only; it expires; and removing a key
from the ring (a rotation) revokes every link that key signed.

Keys come as a setting, ``"k2:<secret>,k1:<secret>"``: the first signs, all of them verify.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import struct
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

_VERSION = 1
_MAC_BYTES = 16
_DOMAIN = b"visio-rdv link v1\x00"
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
_MIN_SECRET_CHARS = 32


class LinkPurpose(StrEnum):
    MANAGE = "manage"  # « Mon rendez-vous », served by booking
    RECORDING = "recording"  # « Enregistrement », served by consent
    CONSENTS = "consents"  # « Mes consentements », served by consent


_PURPOSE_CODES = {LinkPurpose.MANAGE: 1, LinkPurpose.RECORDING: 2, LinkPurpose.CONSENTS: 3}
_PURPOSES = {code: purpose for purpose, code in _PURPOSE_CODES.items()}

# Where each page lives, under its service's public URL.
PAGE_PATHS = {
    LinkPurpose.MANAGE: "/mon-rendez-vous/{token}",
    LinkPurpose.RECORDING: "/enregistrement/{token}",
    LinkPurpose.CONSENTS: "/mes-consentements/{token}",
}
# Booking's page where a person whose link expired or broke asks for a fresh one by email.
FRESH_LINK_PATH = "/nouveau-lien"


def page_url(base_url: str, purpose: LinkPurpose, token: str) -> str:
    return base_url.rstrip("/") + PAGE_PATHS[purpose].format(token=token)


class InvalidLink(ValueError):
    """Not a link we signed, signed by a key since rotated out, or for another purpose."""


class ExpiredLink(InvalidLink):
    """A link we signed, past its expiry: the claims say which appointment it was for."""

    def __init__(self, claims: LinkClaims) -> None:
        super().__init__("this link has expired")
        self.claims = claims


@dataclass(frozen=True)
class LinkClaims:
    purpose: LinkPurpose
    appointment_id: uuid.UUID
    revision: int
    expires_at: datetime
    key_id: str


@dataclass(frozen=True)
class LinkKeys:
    """The ring of link keys: `signing` signs, every key verifies."""

    keys: tuple[tuple[str, bytes], ...]

    @classmethod
    def parse(cls, text: str) -> LinkKeys:
        keys: list[tuple[str, bytes]] = []
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            key_id, sep, secret = item.partition(":")
            if not sep or not _KEY_ID.match(key_id):
                raise ValueError("link keys are 'id:secret' pairs, id of 1-16 letters or digits")
            if len(secret) < _MIN_SECRET_CHARS:
                raise ValueError(f"link key {key_id!r} is shorter than {_MIN_SECRET_CHARS} chars")
            if any(known == key_id for known, _ in keys):
                raise ValueError(f"link key id {key_id!r} is given twice")
            keys.append((key_id, secret.encode()))
        if not keys:
            raise ValueError("no link key given")
        return cls(tuple(keys))

    @staticmethod
    def generate(key_id: str = "k1") -> str:
        """A new key as the setting spells it, for a first installation or a rotation."""
        return f"{key_id}:{secrets.token_urlsafe(32)}"

    @property
    def signing(self) -> tuple[str, bytes]:
        return self.keys[0]

    def secret(self, key_id: str) -> bytes | None:
        return next((secret for known, secret in self.keys if known == key_id), None)


def sign_link(
    keys: LinkKeys,
    purpose: LinkPurpose,
    appointment_id: uuid.UUID,
    revision: int,
    expires_at: datetime,
) -> str:
    key_id, secret = keys.signing
    body = (
        bytes([_VERSION, len(key_id)])
        + key_id.encode()
        + struct.pack(
            ">B16sII",
            _PURPOSE_CODES[purpose],
            appointment_id.bytes,
            revision,
            int(expires_at.timestamp()),
        )
    )
    return _b64(body + _mac(secret, body))


def read_link(
    keys: LinkKeys, token: str, purpose: LinkPurpose, now: datetime | None = None
) -> LinkClaims:
    """The claims of a link we signed for `purpose`; InvalidLink (or ExpiredLink) otherwise."""
    claims = _verified(keys, token)
    if claims.purpose is not purpose:
        raise InvalidLink("this link is for another page")
    if (now or datetime.now(UTC)) >= claims.expires_at:
        raise ExpiredLink(claims)
    return claims


def read_any_link(keys: LinkKeys, token: str) -> LinkClaims:
    """The claims of any link we signed, expired or not, whatever its purpose: what a page
    offering a fresh link needs to know which appointment the person holds a link to."""
    return _verified(keys, token)


def form_token(keys: LinkKeys, link_token: str, action: str) -> str:
    """The CSRF token of a form posted from a link's page: bound to the link and the action,
    derived with the key that signed the link, so nothing needs storing."""
    claims = _verified(keys, link_token)
    secret = keys.secret(claims.key_id)
    assert secret is not None  # _verified found it
    return _b64(_mac(secret, b"form\x00" + action.encode() + b"\x00" + link_token.encode()))


def check_form_token(keys: LinkKeys, link_token: str, action: str, given: str) -> bool:
    try:
        expected = form_token(keys, link_token, action)
    except InvalidLink:
        return False
    return hmac.compare_digest(expected, given)


def link_fingerprint(token: str) -> str:
    """A short stable name for one link, for rate limits and logs (never the link itself)."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def _verified(keys: LinkKeys, token: str) -> LinkClaims:
    if len(token) > 200:
        raise InvalidLink("this link is not one of ours")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise InvalidLink("this link is not one of ours") from None
    if _b64(raw) != token:
        # Only the spelling we sign: base64's spare bits would give one link four names (four
        # rate-limit buckets, four fingerprints in the logs).
        raise InvalidLink("this link is not one of ours")
    if len(raw) < 2 or raw[0] != _VERSION:
        raise InvalidLink("this link is not one of ours")
    id_length = raw[1]
    body_length = 2 + id_length + struct.calcsize(">B16sII")
    if len(raw) != body_length + _MAC_BYTES:
        raise InvalidLink("this link is not one of ours")
    body, mac = raw[:body_length], raw[body_length:]
    try:
        key_id = body[2 : 2 + id_length].decode("ascii")
    except UnicodeDecodeError:
        raise InvalidLink("this link is not one of ours") from None
    secret = keys.secret(key_id)
    if secret is None or not hmac.compare_digest(mac, _mac(secret, body)):
        raise InvalidLink("this link is not one of ours, or its key was revoked")
    code, appointment, revision, expires = struct.unpack(">B16sII", body[2 + id_length :])
    if code not in _PURPOSES:
        raise InvalidLink("this link is not one of ours")
    return LinkClaims(
        purpose=_PURPOSES[code],
        appointment_id=uuid.UUID(bytes=appointment),
        revision=revision,
        expires_at=datetime.fromtimestamp(expires, UTC),
        key_id=key_id,
    )


def _mac(secret: bytes, body: bytes) -> bytes:
    return hmac.new(secret, _DOMAIN + body, hashlib.sha256).digest()[:_MAC_BYTES]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
