"""The email address of the contracts: pydantic's `EmailStr`, a plain address recognised at a
glance, any other checked once per address."""

from __future__ import annotations

import functools
import re
from typing import Annotated

import email_validator
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES
from pydantic import AfterValidator, WithJsonSchema
from pydantic.networks import validate_email

# An atom of the local part: email-validator's ASCII `ATEXT` (its `rfc_constants`).
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
# A domain label in lower case: letters, digits and inner hyphens (RFC 1123), at most 63 long.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
# local@label.….tld, the top-level domain of letters only (email-validator wants it to end with
# one). No space, quote, angle bracket, capital in the domain, nor anything outside ASCII.
_PLAIN = re.compile(rf"({_ATOM}(?:\.{_ATOM})*)@((?:{_LABEL}\.)+[a-z]{{2,63}})")
_LOCAL_MAX, _ADDRESS_MAX = 64, 254  # email-validator's limits (RFC 5321 4.5.3.1)


def _email_address(value: str) -> str:
    """pydantic's `EmailStr` check: the same normalised address, the same error. Every service
    parses every event that carries an address, nearly each a new one, and the full check costs
    tens of microseconds (11 % of alerts' CPU): a plain address (`_is_plain`) is what
    email-validator would return unchanged, so it is returned as it is; any other address goes
    through the full check (`_checked`)."""
    return value if _is_plain(value) else _checked(value)


def _is_plain(value: str) -> bool:
    """Whether `value` is, at a glance, an address email-validator would take and return
    unchanged: a dot-atom local part of ASCII characters, a domain of at least two labels
    already in lower case under a top-level domain of letters, within every length limit, and
    none of what it would refuse or change however well formed: two hyphens in a row in the
    domain (it refuses `ab--` labels, R-LDH, and decodes `xn--` ones, Punycode, through idna), a
    special-use domain (`.test`, `.local`, `.onion`…, its list read at each call as it reads
    it), a role mailbox in capitals, which it lowers (`INFO@`, RFC 2142). A subset of what it
    accepts, kept strict: what is in doubt goes to the full check, which says the same thing,
    only slower."""
    if len(value) > _ADDRESS_MAX or (match := _PLAIN.fullmatch(value)) is None:
        return False
    local, domain = match.group(1, 2)
    if len(local) > _LOCAL_MAX or "--" in domain:
        return False
    lowered = local.lower()
    if lowered != local and lowered in CASE_INSENSITIVE_MAILBOX_NAMES:
        return False
    special_use = _suffixes(tuple(email_validator.SPECIAL_USE_DOMAIN_NAMES))
    return not ("." + domain).endswith(special_use)


@functools.lru_cache(maxsize=1)
def _suffixes(names: tuple[str, ...]) -> tuple[str, ...]:
    """`.name` for each name: a domain is `name` or under it when `.domain` ends with one. Made
    once for the list as it stands (the list is email-validator's to change, and it reads it at
    each call): looking at each name in turn took half the fast path's time."""
    return tuple("." + name for name in names)


@functools.lru_cache(maxsize=8192)
def _checked(value: str) -> str:
    """pydantic's `EmailStr` check (email-validator), made once per address and process: an
    address is read again at every hop of the chain — five services parse each request,
    notifications its stored copy at each email. Plain addresses do not come here, so the cache
    keeps the others (capitals in the domain, an accent, a display name), each of which would
    cost the full check again. A refused address is not kept: it raises again each time."""
    return validate_email(value)[1]


# `EmailStr`, with its JSON schema, checked at a glance or once per address (`_email_address`).
EmailAddress = Annotated[
    str,
    AfterValidator(_email_address),
    WithJsonSchema({"type": "string", "format": "email"}),
]
