"""The Caf directory: every code the front door accepts names a Caf and its zone; what a
deployment's configuration says of a Caf, and only that, reaches it."""

from __future__ import annotations

import itertools
import json
import string
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError
from visio_shared.booking_requests import BookingRequest
from visio_shared.caf_directory import (
    CafContact,
    CafDirectory,
    caf_directory,
    from_data,
    missing_contacts_warning,
)

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
OVERSEAS = {
    "971": "America/Guadeloupe",
    "972": "America/Martinique",
    "973": "America/Cayenne",
    "974": "Indian/Reunion",
    "976": "Indian/Mayotte",
}


def accepted_at_front_door() -> list[str]:
    """Every three-character code (digits, and digits then A or B) the booking contract lets
    through on caf_code, asked of the contract itself."""
    accepted = []
    third = string.digits + "AB"
    for a, b, c in itertools.product(string.digits, string.digits, third):
        code = a + b + c
        zone = OVERSEAS.get(code, "Europe/Paris")
        start = "2026-12-03T10:00:00" + ("+04:00" if zone == "Indian/Reunion" else "+01:00")
        body = {
            "caf_code": code,
            "advisor": {"id": "6f1c2a4e-8b1d-4c55-9a51-2f9e6f0c1d11", "display_name": "C. M."},
            "start": start,
            "duration_minutes": 30,
            "timezone": zone,
            "subject": "Prime d'activité",
            "user": {
                "first_name": "J",
                "last_name": "D",
                "email": "j@example.fr",
                "device": "tablet",
            },
            "consent": {"cgu_version": "1", "accepted_at": NOW, "recording_authorised": False},
        }
        try:
            BookingRequest.model_validate(body, context={"now": NOW})
        except ValidationError as exc:
            if any(error["loc"][:1] == ("caf_code",) for error in exc.errors()):
                continue
        accepted.append(code)
    return accepted


def unresolved(codes: list[str], directory: CafDirectory) -> list[str]:
    """The codes the directory cannot name with a Caf and a real zone."""
    wrong = []
    for code in codes:
        caf = directory.cafs.get(code)
        if caf is None or not caf.name.startswith("Caf ") or ZoneInfo(caf.timezone) is None:
            wrong.append(code)
        elif code in OVERSEAS and caf.timezone != OVERSEAS[code]:
            wrong.append(code)
    return wrong


def test_every_code_the_front_door_accepts_names_a_caf_and_its_zone() -> None:
    codes = accepted_at_front_door()
    assert len(codes) == 101  # the departmental Cafs: 96 in metropolitan France, 5 overseas
    assert unresolved(codes, caf_directory()) == []
    assert {code: caf_directory().get(code).timezone for code in OVERSEAS} == OVERSEAS
    assert caf_directory().get("974").name == "Caf de La Réunion"
    assert caf_directory().get("075").name == "Caf de Paris"
    assert caf_directory().get("02A").name == "Caf de la Corse-du-Sud"


def test_the_check_sees_a_caf_missing_or_in_the_wrong_zone() -> None:
    data = _data()
    del data["cafs"]["059"]
    data["cafs"]["974"]["timezone"] = "Europe/Paris"
    assert unresolved(accepted_at_front_door(), from_data(data)) == ["059", "974"]


def test_the_data_file_cites_its_public_source() -> None:
    data = _data()
    assert "caf.fr" in data["source"]["url"]
    assert "insee.fr" in data["source"]["codes"]


def test_no_caf_has_contacts_that_configuration_did_not_give() -> None:
    directory = caf_directory()
    assert directory.missing_contacts() == sorted(directory.cafs)
    reunion = directory.get("974")
    assert reunion.contact_url == directory.national_contact_url
    assert (reunion.phone, reunion.hours, reunion.mediator, reunion.access_address) == (None,) * 4


def test_configured_contacts_reach_their_caf_and_the_warning_names_the_others() -> None:
    contact = CafContact.model_validate(
        {
            "contact_url": "https://www.caf.fr/allocataires/caf-de-la-reunion/contact",
            "phone": "3230",
            "hours": "du lundi au vendredi, de 8 h 00 à 16 h 00",
            "mediator": "Médiateur de la Caf de La Réunion, 4 rue Champ-Fleuri, Saint-Denis",
        }
    )
    directory = caf_directory().with_contacts({"974": contact})
    reunion = directory.get("974")
    assert reunion.own_contact and reunion.phone == "3230"
    assert reunion.access_address is None  # not given: not invented
    warning = missing_contacts_warning(directory)
    assert warning is not None and warning.startswith("100 Caf without a contact entry")
    assert "974" not in warning.split(": ", 1)[1].split(", ")


def test_contacts_for_an_unknown_caf_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown Caf code"):
        caf_directory().with_contacts({"750": CafContact()})


def test_an_unknown_code_from_an_old_event_gets_the_national_entry() -> None:
    caf = caf_directory().get("750")
    assert (caf.name, caf.timezone, caf.own_contact) == ("votre Caf", "Europe/Paris", False)


def _data() -> dict[str, Any]:
    text = resources.files("visio_shared").joinpath("caf_directory.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data
