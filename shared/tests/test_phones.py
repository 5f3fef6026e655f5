"""Mobile numbers: read as people write them, kept in E.164, refused clearly otherwise."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError
from visio_shared.booking_requests import ContactCorrection, UserIn
from visio_shared.phones import InvalidMobile, normalise_mobile


@pytest.mark.parametrize(
    ("written", "e164"),
    [
        ("06 12 34 56 78", "+33612345678"),
        ("+33 7 81 23 45 67", "+33781234567"),
        ("0033612345678", "+33612345678"),
        ("0692 12 34 56", "+262692123456"),  # La Réunion, written the national way
        ("+262 639 01 23 45", "+262639012345"),  # Mayotte
        ("0690 12 34 56", "+590690123456"),  # Guadeloupe
        ("0694 12 34 56", "+594694123456"),  # Guyane
        ("+596 696 12 34 56", "+596696123456"),  # Martinique
    ],
)
def test_caf_territories_mobiles_are_kept_in_e164(written: str, e164: str) -> None:
    assert normalise_mobile(written) == e164


@pytest.mark.parametrize(
    ("written", "why"),
    [
        ("+32 470 12 34 56", "+32 numbers cannot receive our text messages"),
        ("+44 7911 123456", "+44 numbers cannot receive"),
        ("01 23 45 67 89", "is not a mobile number"),
        ("06 12", "is not a valid phone number"),
        ("appelez-moi", "is not a phone number"),
    ],
)
def test_other_numbers_are_refused_with_a_reason(written: str, why: str) -> None:
    with pytest.raises(InvalidMobile, match=re.escape(why)):
        normalise_mobile(written)


def test_a_booking_names_the_mobile_field_it_refuses() -> None:
    base = {"first_name": "Jeanne", "last_name": "Dupont", "email": "j@example.fr"}
    with pytest.raises(ValidationError) as refused:
        UserIn.model_validate({**base, "device": "smartphone", "mobile": "+32470123456"})
    assert refused.value.errors()[0]["loc"] == ("mobile",)
    user = UserIn.model_validate(
        {**base, "device": "smartphone", "mobile": "06 12 34 56 78", "sms_opt_in": True}
    )
    assert user.mobile == "+33612345678"


def test_text_messages_need_a_number() -> None:
    base = {"first_name": "J", "last_name": "D", "email": "j@example.fr", "device": "computer"}
    with pytest.raises(ValidationError, match=r"user\.mobile: is needed"):
        UserIn.model_validate({**base, "sms_opt_in": True})
    assert ContactCorrection.model_validate({"mobile": "0612345678"}).mobile == "+33612345678"
