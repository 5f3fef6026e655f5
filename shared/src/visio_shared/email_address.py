"""The email address of the contracts: pydantic's `EmailStr`, checked once per address."""

from __future__ import annotations

import functools
from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema
from pydantic.networks import validate_email


@functools.lru_cache(maxsize=8192)
def _email_address(value: str) -> str:
    """pydantic's `EmailStr` check (email-validator, the same normalised address and the same
    error), made once per address and process: an address is read again at every hop of the
    chain — five services parse each request, notifications its stored copy at each email —
    and one check costs tens of microseconds. A refused address is not kept: it raises again
    each time."""
    return validate_email(value)[1]


# `EmailStr`, with its JSON schema, checked once per address (`_email_address`).
EmailAddress = Annotated[
    str,
    AfterValidator(_email_address),
    WithJsonSchema({"type": "string", "format": "email"}),
]
