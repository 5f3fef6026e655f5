"""A person's mobile number, for text messages: read as people write it, kept in E.164.

Google's libphonenumber (the `phonenumbers` port, kept in step with the numbering plans) does
the reading: « 06 12 34 56 78 », « +33 6 12 34 56 78 » and « 0033612345678 » are one number.
Only mobiles of the territories that have a Caf are accepted — metropolitan France (+33) and the
overseas départements (+262 La Réunion and Mayotte, +590 Guadeloupe, +594 Guyane, +596
Martinique) — since a text to a landline or abroad would not reach the person, or would cost
what the service cannot pay. An overseas number written the national way (« 0692 12 34 56 »)
is read in its own territory: in metropolitan France's plan those prefixes are not mobiles.
"""

from __future__ import annotations

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

# Country calling codes of the territories with a Caf, and the regions libphonenumber files
# them under (Saint-Barthélemy and Saint-Martin share Guadeloupe's +590).
CAF_CALLING_CODES = frozenset({33, 262, 590, 594, 596})
_REGIONS = ("FR", "RE", "YT", "GP", "MQ", "GF", "BL", "MF")
_MOBILE = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE})
_MAX_CHARS = 30


class InvalidMobile(ValueError):
    """Why a number is refused, in words a person or a partner can act on."""


def normalise_mobile(text: str) -> str:
    """The number in E.164 (« +33612345678 »), or `InvalidMobile` saying why not."""
    if len(text) > _MAX_CHARS:
        raise InvalidMobile("is too long to be a phone number")
    candidates = []
    for region in _REGIONS:
        try:
            number = phonenumbers.parse(text, region)
        except NumberParseException:
            raise InvalidMobile(
                "is not a phone number (write it as 06 12 34 56 78 or +33 6 12 34 56 78)"
            ) from None
        candidates.append(number)
        if text.lstrip().startswith(("+", "00")):
            break  # international form: the region plays no part
    valid = [number for number in candidates if phonenumbers.is_valid_number(number)]
    if not valid:
        raise InvalidMobile("is not a valid phone number")
    number = valid[0]
    if number.country_code not in CAF_CALLING_CODES:
        raise InvalidMobile(
            f"+{number.country_code} numbers cannot receive our text messages: only mobiles "
            "of metropolitan France (+33) and of the overseas départements (+262, +590, +594, "
            "+596) are accepted"
        )
    if phonenumbers.number_type(number) not in _MOBILE:
        raise InvalidMobile("is not a mobile number: text messages need a mobile (06 or 07)")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def masked(e164: str) -> str:
    """The number as an email or a log may show it: the last two digits only."""
    return "•" * max(len(e164) - 3, 0) + e164[-2:]
