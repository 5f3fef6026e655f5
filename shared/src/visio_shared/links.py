"""Signed self-service links: the contract between the emails (notifications signs) and the pages
(booking and consent read).

A link token is opaque and short: base64url of a version, the signing key's id, the purpose, the
appointment id, its revision and the expiry, followed by a truncated HMAC-SHA256. It carries no
personal data. It is good for one purpose and one appointment only; it expires; and removing a key
from the ring (a rotation) revokes every link that key signed.

**One key per purpose.** Each purpose (a page, and booking's address form) has its own HMAC key,
so a service holds only the keys of what it signs or verifies: consent, which reads the consent
pages' links, cannot make a « Mon rendez-vous » link (and with it cancel an appointment). The
keys come as a ring setting, ``"k2.manage:<key>,k2.recording:<key>,k1.manage:<key>"``: entries
``id.purpose:key`` (32 random bytes, base64url); for each purpose the first entry signs and all
verify. A ring may also hold *master* entries ``id:<secret>`` (32+ characters), from which every
purpose's key is derived with HKDF-SHA256 (RFC 5869; info = the purpose): convenient on a
development machine, refused in production, where the master stays with the operator and each
service is given its derived keys (`visio-rdv keys derive`).
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

# 2: keys derived per purpose (version 1 links, signed with the ring's secret itself, no longer
# open: they lead to the page that sends a fresh one).
_VERSION = 2
_MAC_BYTES = 16
_DOMAIN = b"visio-rdv link v2\x00"
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
_MIN_SECRET_CHARS = 32
_DERIVED_KEY_BYTES = 32
_HKDF_SALT = b"visio-rdv link keys"


class LinkPurpose(StrEnum):
    MANAGE = "manage"  # « Mon rendez-vous », served by booking
    RECORDING = "recording"  # « Enregistrement », served by consent
    CONSENTS = "consents"  # « Mes consentements », served by consent


class KeyPurpose(StrEnum):
    """What a key is for: each link purpose, and booking's address form (its CSRF token and the
    keyed hash of the addresses it rate-limits), which has no link to bind to."""

    MANAGE = "manage"
    RECORDING = "recording"
    CONSENTS = "consents"
    ADDRESS_FORM = "address-form"

    @classmethod
    def of(cls, purpose: LinkPurpose) -> KeyPurpose:
        return cls(purpose.value)


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
class RingEntry:
    key_id: str
    purpose: KeyPurpose | None  # None: a master, from which every purpose's key is derived
    secret: bytes


@dataclass(frozen=True)
class LinkKeys:
    """A ring of keys: for each purpose, the first entry that has it signs, every one verifies."""

    entries: tuple[RingEntry, ...]

    @classmethod
    def parse(cls, text: str) -> LinkKeys:
        entries: list[RingEntry] = []
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            name, sep, secret = item.partition(":")
            key_id, dot, purpose_text = name.partition(".")
            if not sep or not _KEY_ID.match(key_id):
                raise ValueError(
                    "link keys are 'id:secret' or 'id.purpose:key' entries, id of 1-16 letters "
                    "or digits"
                )
            purpose: KeyPurpose | None = None
            if dot:
                try:
                    purpose = KeyPurpose(purpose_text)
                except ValueError:
                    raise ValueError(
                        f"link key {name!r}: the purpose is one of "
                        f"{', '.join(p.value for p in KeyPurpose)}"
                    ) from None
                raw = _unb64(secret)
                if raw is None or len(raw) < _DERIVED_KEY_BYTES:
                    raise ValueError(
                        f"link key {name!r} is not {_DERIVED_KEY_BYTES}+ bytes in base64url"
                    )
            elif len(secret) < _MIN_SECRET_CHARS:
                raise ValueError(f"link key {key_id!r} is shorter than {_MIN_SECRET_CHARS} chars")
            else:
                raw = secret.encode()
            for known in entries:
                if known.key_id == key_id and (
                    known.purpose == purpose or known.purpose is None or purpose is None
                ):
                    raise ValueError(f"link key id {name!r} is given twice")
            entries.append(RingEntry(key_id, purpose, raw))
        if not entries:
            raise ValueError("no link key given")
        return cls(tuple(entries))

    @staticmethod
    def generate(key_id: str = "k1") -> str:
        """A new master key as the setting spells it, for a first installation or a rotation."""
        return f"{key_id}:{secrets.token_urlsafe(32)}"

    @property
    def masters(self) -> tuple[str, ...]:
        """The ids of the master entries (every purpose derivable from them)."""
        return tuple(entry.key_id for entry in self.entries if entry.purpose is None)

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(entry.key_id for entry in self.entries))

    def purposes(self) -> frozenset[KeyPurpose]:
        """What this ring can sign or verify."""
        if self.masters:
            return frozenset(KeyPurpose)
        return frozenset(entry.purpose for entry in self.entries if entry.purpose is not None)

    def secret(self, key_id: str, purpose: KeyPurpose) -> bytes | None:
        """The key of `purpose` under `key_id`, derived from a master if that is what is held."""
        for entry in self.entries:
            if entry.key_id != key_id:
                continue
            if entry.purpose is None:
                return derive_key(entry.secret, purpose)
            if entry.purpose is purpose:
                return entry.secret
        return None

    def signing(self, purpose: KeyPurpose) -> tuple[str, bytes]:
        """The id and key that sign for `purpose`: the first entry of the ring that has it."""
        for entry in self.entries:
            if entry.purpose is None or entry.purpose is purpose:
                secret = self.secret(entry.key_id, purpose)
                assert secret is not None
                return entry.key_id, secret
        raise LookupError(f"this ring holds no key for {purpose.value!r}")

    def restricted_to(self, purposes: frozenset[KeyPurpose]) -> LinkKeys:
        """The same ring with only the keys of `purposes`, masters replaced by what they derive:
        what a service keeps in memory, so it cannot sign what it has no business signing."""
        entries: list[RingEntry] = []
        for entry in self.entries:
            wanted = [entry.purpose] if entry.purpose is not None else list(KeyPurpose)
            for purpose in wanted:
                if purpose is not None and purpose in purposes:
                    secret = self.secret(entry.key_id, purpose)
                    assert secret is not None
                    entries.append(RingEntry(entry.key_id, purpose, secret))
        if not entries:
            raise ValueError(
                "the link keys hold none of " + ", ".join(sorted(p.value for p in purposes))
            )
        return LinkKeys(tuple(entries))

    def setting(self) -> str:
        """This ring as the setting spells it (masters included as they were given)."""
        return ",".join(
            f"{entry.key_id}:{entry.secret.decode()}"
            if entry.purpose is None
            else f"{entry.key_id}.{entry.purpose.value}:{_b64(entry.secret)}"
            for entry in self.entries
        )


def derive_key(master: bytes, purpose: KeyPurpose) -> bytes:
    """HKDF-SHA256 (RFC 5869) of one purpose's key from a master: one output block, so the
    expand step is a single HMAC."""
    pseudo_random_key = hmac.new(_HKDF_SALT, master, hashlib.sha256).digest()
    info = b"visio-rdv link key\x00" + purpose.value.encode()
    return hmac.new(pseudo_random_key, info + b"\x01", hashlib.sha256).digest()


def derive_ring(masters: LinkKeys, purposes: frozenset[KeyPurpose]) -> str:
    """The ring setting of a service that signs or verifies `purposes`, from the operator's
    master ring: what `visio-rdv keys derive` prints."""
    return masters.restricted_to(purposes).setting()


def sign_link(
    keys: LinkKeys,
    purpose: LinkPurpose,
    appointment_id: uuid.UUID,
    revision: int,
    expires_at: datetime,
) -> str:
    key_id, secret = keys.signing(KeyPurpose.of(purpose))
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
    secret = keys.secret(claims.key_id, KeyPurpose.of(claims.purpose))
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
    code, appointment, revision, expires = struct.unpack(">B16sII", body[2 + id_length :])
    if code not in _PURPOSES:
        raise InvalidLink("this link is not one of ours")
    secret = keys.secret(key_id, KeyPurpose.of(_PURPOSES[code]))
    if secret is None or not hmac.compare_digest(mac, _mac(secret, body)):
        raise InvalidLink("this link is not one of ours, or its key was revoked")
    return LinkClaims(
        purpose=_PURPOSES[code],
        appointment_id=uuid.UUID(bytes=appointment),
        revision=revision,
        expires_at=datetime.fromtimestamp(expires, UTC),
        key_id=key_id,
    )


def _mac(secret: bytes, body: bytes) -> bytes:
    return hmac.digest(secret, _DOMAIN + body, "sha256")[:_MAC_BYTES]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


# --- Short links, for text messages: /r/<code> ---------------------------------------------
#
# A text message has no room for a 70-character token. Its link is booking's `/r/<code>`, where
# the code is 12 bytes in base64url (16 characters): the first 6 bytes of the appointment id
# (random: ids are UUID4) and a 6-byte HMAC of the whole id under the « Mon rendez-vous » key.
# Booking finds the appointment by the prefix, checks the MAC with each key of its ring, and
# answers with a « Mon rendez-vous » link signed for the appointment as it stands, expiring when
# an email's would: the short link expires with it, and a rotation that removes the key revokes
# it too. No table maps codes, so nothing needs writing across services: notifications computes
# the code, booking reads it. Guessing one means guessing 96 bits, and booking rate-limits tries.
SHORT_LINK_PATH = "/r/{code}"
_SHORT_PREFIX_BYTES = 6
_SHORT_MAC_BYTES = 6
_SHORT_DOMAIN = b"visio-rdv short link v1\x00"
SHORT_CODE_LENGTH = 16


def short_code(keys: LinkKeys, appointment_id: uuid.UUID) -> str:
    _, secret = keys.signing(KeyPurpose.MANAGE)
    return _b64(appointment_id.bytes[:_SHORT_PREFIX_BYTES] + _short_mac(secret, appointment_id))


def short_url(base_url: str, code: str) -> str:
    return base_url.rstrip("/") + SHORT_LINK_PATH.format(code=code)


def short_code_prefix(code: str) -> bytes | None:
    """The appointment id's first bytes a well-formed code carries; None if it is not one."""
    if len(code) != SHORT_CODE_LENGTH:
        return None
    raw = _unb64(code)
    if raw is None or len(raw) != _SHORT_PREFIX_BYTES + _SHORT_MAC_BYTES or _b64(raw) != code:
        return None
    return raw[:_SHORT_PREFIX_BYTES]


def short_code_matches(keys: LinkKeys, code: str, appointment_id: uuid.UUID) -> bool:
    """Whether `code` is this appointment's, under any « Mon rendez-vous » key of the ring."""
    raw = _unb64(code)
    if raw is None or raw[:_SHORT_PREFIX_BYTES] != appointment_id.bytes[:_SHORT_PREFIX_BYTES]:
        return False
    given = raw[_SHORT_PREFIX_BYTES:]
    for key_id in keys.key_ids:
        secret = keys.secret(key_id, KeyPurpose.MANAGE)
        if secret is not None and hmac.compare_digest(given, _short_mac(secret, appointment_id)):
            return True
    return False


def _short_mac(secret: bytes, appointment_id: uuid.UUID) -> bytes:
    digest = hmac.new(secret, _SHORT_DOMAIN + appointment_id.bytes, hashlib.sha256).digest()
    return digest[:_SHORT_MAC_BYTES]


# The link that confirms a new address the person typed on « Mon rendez-vous »: sent to that
# address, it proves they read it there. Its code is a MAC of the correction's id under the
# « Mon rendez-vous » key, as for short links: notifications computes it from the
# ContactCorrectionRequested it mails, booking computed it when it asked and keeps only its
# SHA-256 (`contact_corrections`), so no code travels on a topic or sits in a table. A key
# rotated between the two makes the link fail: the person asks again from their page.
CONFIRM_ADDRESS_PATH = "/mon-rendez-vous/confirmer-adresse/{code}"
_CONFIRM_DOMAIN = b"visio-rdv address confirmation v1\x00"


def address_confirmation_code(keys: LinkKeys, correction_id: uuid.UUID) -> str:
    _, secret = keys.signing(KeyPurpose.MANAGE)
    return _b64(hmac.new(secret, _CONFIRM_DOMAIN + correction_id.bytes, hashlib.sha256).digest())


def address_confirmation_url(base_url: str, code: str) -> str:
    return base_url.rstrip("/") + CONFIRM_ADDRESS_PATH.format(code=code)
