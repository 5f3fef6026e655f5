"""The events' email type: pydantic's `EmailStr` — the same normalised address, the same
error, the same JSON schema — with each address checked once per process."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, EmailStr, ValidationError
from visio_shared import email_address
from visio_shared.email_address import EmailAddress

ADDRESSES = [
    "jeanne.dupont@example.fr",
    "Jeanne.Dupont@EXAMPLE.FR",
    "  spaced@example.fr  ",
    "Jeanne Dupont <jeanne@example.fr>",
    "élodie@exemple.fr",
    "jeanne@bücher.example",
    "no-at-sign.example.fr",
    "two@@example.fr",
    "jeanne@[192.168.0.1]",
    "line\r\nbreak@example.fr",
    "x" * 300 + "@example.fr",
    "",
]


class Ours(BaseModel):
    email: EmailAddress


class Pydantics(BaseModel):
    email: EmailStr


def _outcome(model: type[BaseModel], address: str) -> Any:
    try:
        return model(email=address).model_dump()
    except ValidationError as exc:
        return [(error["type"], error["msg"]) for error in exc.errors()]


@pytest.mark.parametrize("address", ADDRESSES)
def test_it_says_what_emailstr_says(address: str) -> None:
    assert _outcome(Ours, address) == _outcome(Pydantics, address)
    assert _outcome(Ours, address) == _outcome(Ours, address)  # again: from the cache, or not


def test_its_schema_is_emailstrs() -> None:
    assert Ours.model_json_schema() == Pydantics.model_json_schema() | {"title": "Ours"}


def test_an_address_is_checked_once_and_a_refused_one_every_time() -> None:
    email_address._email_address.cache_clear()
    for _ in range(3):
        Ours(email="once@example.fr")
        with pytest.raises(ValidationError):
            Ours(email="never.example.fr")
    info = email_address._email_address.cache_info()
    assert (info.misses, info.hits, info.currsize) == (4, 2, 1)
