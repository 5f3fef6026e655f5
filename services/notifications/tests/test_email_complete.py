"""The email says everything the seed text asks (issue 24): the charter's closing sentence, that
Teams works in a browser (computer users), the recording sentence either way, the dial-in when
Graph gives one, the Caf that writes, and the CGU version the person accepted."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from visio_notifications.compose import Letter, compose
from visio_notifications.settings import NotificationsSettings
from visio_shared import Device

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
JOIN_URL = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_abc%40thread.v2/0"
CLOSING = (
    "D'une façon générale, tout acte d'incivilité probant expose l'utilisateur à des poursuites."
)
BROWSER = "Teams fonctionne aussi dans votre navigateur"


def _texts(make: Any, settings: NotificationsSettings, **fields: Any) -> tuple[str, str, str]:
    """(text, html as text, .ics) of a confirmation."""
    dial_in = fields.pop("dial_in", None)
    appointment = make.appointment(**fields)
    meeting = make.meeting(appointment, join_url=JOIN_URL, **dial_in) if dial_in else None
    letter = Letter("confirmation", 1, appointment, join_url=JOIN_URL, meeting=meeting)
    message = compose(letter, settings, now=NOW)
    found: dict[str, str] = {}
    for part in message.walk():
        if part.get_content_maintype() != "multipart" and part.get_filename() is None:
            found[part.get_content_subtype()] = part.get_content()
    html = found["html"].replace("&nbsp;", "\u00a0").replace("&#39;", "'")
    return found["plain"], html, found["calendar"]


def _plain(text: str) -> str:
    return " ".join(text.replace("\u00a0", " ").split())


@pytest.mark.parametrize("recording", [True, False])
def test_the_charter_closes_and_the_recording_is_said_either_way(make, settings, recording) -> None:
    for part in _texts(make, settings, recording_authorised=recording)[:2]:
        said = _plain(part)
        assert CLOSING in said
        if recording:
            assert "vos connexions et la session du rendez-vous sont enregistrées" in said
        else:
            assert "la session ne sera pas enregistrée" in said
            assert "Seules vos connexions au service sont enregistrées" in said


def test_computer_users_learn_teams_works_in_a_browser(make, settings) -> None:
    computer = _texts(make, settings, device=Device.COMPUTER)
    phone = _texts(make, settings, device=Device.SMARTPHONE)
    assert all(BROWSER in _plain(part) for part in computer[:2])
    assert not any(BROWSER in _plain(part) for part in phone[:2])


def test_the_dial_in_is_given_when_graph_gave_one(make, settings) -> None:
    dial_in = {"conference_id": "418276539", "toll_number": "+33 1 70 00 00 00"}
    text, html, _ = _texts(make, settings, dial_in=dial_in)
    for part in (text, html):
        said = _plain(part)
        assert "Si la vidéo ne fonctionne pas" in said or "SI LA VIDÉO NE FONCTIONNE PAS" in said
        assert "appelez le +33 1 70 00 00 00" in said
        assert "tapez le numéro de conférence 418276539 suivi de #" in said
    free = _texts(make, settings, dial_in=dial_in | {"toll_free_number": "0 800 00 00 00"})[0]
    assert "appelez le 0 800 00 00 00 (appel gratuit)" in _plain(free)
    without = _texts(make, settings)
    assert not any("si la vidéo ne fonctionne pas" in _plain(part).lower() for part in without[:2])


def test_the_caf_of_the_appointment_signs_and_the_national_page_stands_in(make, settings) -> None:
    text, html, ics = _texts(make, settings, caf_code="974", timezone="Indian/Reunion")
    for part in (text, html):
        said = _plain(part)
        assert "Caf de La Réunion" in said and "Votre Caf" not in said
        assert "Contacter la Caf de La Réunion" in said or "CONTACTER LA CAF DE LA RÉUNION" in said
        assert "https://www.caf.fr/allocataires/nous-contacter" in said
    assert "Caf de La Réunion" in ics.replace("\r\n ", "")


def test_a_configured_contact_is_given_and_nothing_else(make, settings) -> None:
    contacts = {"974": {"contact_url": "https://caf.example/974/contact", "phone": "3230"}}
    configured = NotificationsSettings.model_validate(
        settings.model_dump() | {"caf_contacts": contacts}
    )
    text, html, _ = _texts(make, configured, caf_code="974", timezone="Indian/Reunion")
    for part in (text, html):
        said = _plain(part)
        assert "https://caf.example/974/contact" in said and "Par téléphone : 3230" in said
        assert "article 7" not in said and "article 8" not in said  # not given: not said


def test_the_cgu_link_is_the_version_the_person_accepted(make, settings) -> None:
    text, html, _ = _texts(make, settings)
    assert "https://consentement.caf.example/cgu/1" in text
    assert 'href="https://consentement.caf.example/cgu/1"' in html
    assert "https://www.caf.fr/visio-rdv/cgu" not in text + html
