"""The confirmation email, built from the two events: headers, both parts, the guide in the
right order, the charter, the recording line, and an .ics a calendar can read back."""

from __future__ import annotations

import email
import html
import re
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage

import icalendar
import pytest
from visio_notifications.mailer import build_confirmation, join_url_allowed, redact
from visio_shared import Device

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def _parts(message: EmailMessage) -> tuple[str, str, EmailMessage]:
    text = message.get_body(preferencelist=("plain",))
    body = message.get_body(preferencelist=("html",))
    calendars = [part for part in message.walk() if part.get_content_type() == "text/calendar"]
    assert text is not None and body is not None and len(calendars) == 1
    return text.get_content(), body.get_content(), calendars[0]


def _visible(body: str) -> str:
    """The HTML part as a reader sees it: no tags, entities decoded, plain spaces."""
    text = html.unescape(re.sub(r"<[^>]+>", " ", body)).replace("\u00a0", " ")
    return re.sub(r"\s+", " ", text)


@pytest.fixture
def build(new_appointment, new_meeting, settings):
    def build(**fields):
        meeting_fields = {key: fields.pop(key) for key in ("join_url",) if key in fields}
        appointment = new_appointment(**fields)
        meeting = new_meeting(appointment, **meeting_fields)
        message = build_confirmation(appointment, meeting, settings, now=NOW)
        # What the relay will see: the bytes, parsed back.
        parsed = email.message_from_bytes(bytes(message), policy=policy.default)
        return appointment, meeting, parsed

    return build


def test_headers(build, settings) -> None:
    appointment, _, message = build(
        start=datetime.fromisoformat("2026-12-03T10:00:00+04:00"),
        timezone="Indian/Reunion",
        caf_code="974",
        revision=2,
    )
    assert message["Subject"] == "Votre rendez-vous visio avec la Caf le jeudi 3 décembre à 10 h 00"
    assert message["To"].addresses[0].addr_spec == "amina.hoarau@example.org"
    assert message["To"].addresses[0].display_name == "Amina Hoarau"
    assert message["From"].addresses[0].addr_spec == "visio-rdv@caf.fr"
    assert message["From"].addresses[0].display_name == "Caf - Visio RDV"
    assert (
        message["Message-ID"] == f"<{appointment.appointment_id}.r2.confirmation@visio-rdv.caf.fr>"
    )
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Date"].datetime == NOW
    assert message.get_content_type() == "multipart/mixed"
    assert message.get_body(preferencelist=("related", "html", "plain")) is not None


def test_text_part_has_the_link_and_the_four_steps(build, settings) -> None:
    _, meeting, message = build()
    text, _, _ = _parts(message)
    assert meeting.join_url in text
    assert text.startswith("Bonjour Amina,")
    steps = [
        "01 - SÉLECTION DU TYPE DE TÉLÉPHONE",
        "02 - INSTALLATION DE L'APPLICATION",
        "03 - REJOINDRE LA RÉUNION",
        "04 - PARTICIPER À LA RÉUNION",
    ]
    positions = [text.index(step) for step in steps]
    assert positions == sorted(positions)
    for words in (
        "« Installer »",
        "Cliquer sur « Rejoindre la réunion » puis sur « Participer à la réunion »",
        "Renseigner votre nom puis cliquer sur le bouton « Participer à la réunion »",
        "Autoriser Teams à utiliser votre micro",
        "iPhone ou iPad : App Store",
        settings.app_store_url,
        "Android : Google Play",
        settings.google_play_url,
        "d'un micro",
        "d'une webcam",
        "d'une connexion internet suffisante",
        "Hors coûts liés à votre opérateur pour l'accès internet",
        "Claire Martin",
        "Prime d'activité",
        settings.cgu_url,
        "(version 1)",
    ):
        assert words in text, words


def test_html_has_a_button_and_the_link_as_text(build) -> None:
    _, meeting, message = build()
    _, body, _ = _parts(message)
    href = html.escape(meeting.join_url, quote=True)
    button = re.search(rf'<a href="{re.escape(href)}"[^>]*>Rejoindre le rendez-vous</a>', body)
    assert button is not None
    assert f">{href}</a>" in body  # the link, visible as text too
    assert 'lang="fr"' in body
    assert "max-width:600px" in body


def test_html_escapes_what_people_typed(build) -> None:
    _, _, message = build(
        advisor_name="<script>alert('x')</script>",
        first_name="<b>Amina</b>",
        subject='Objet" onmouseover="alert(1)',
    )
    text, body, _ = _parts(message)
    assert "<script>" not in body
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in body
    assert "<b>Amina</b>" not in body
    assert "&lt;b&gt;Amina&lt;/b&gt;" in body
    assert 'onmouseover="alert(1)' not in body
    # The text part is not HTML: it shows the name as typed.
    assert "<script>alert('x')</script>" in text


def test_a_newline_in_a_name_never_becomes_a_header(build) -> None:
    _, _, message = build(first_name="Amina\r\nBcc: someone@evil.example", advisor_name="A\nB")
    assert message["Bcc"] is None
    assert len(message["To"].addresses) == 1
    assert message["To"].addresses[0].addr_spec == "amina.hoarau@example.org"


@pytest.mark.parametrize("device", [Device.SMARTPHONE, Device.TABLET])
def test_smartphone_path_first_for_phone_and_tablet_users(build, device) -> None:
    _, _, message = build(device=device)
    text, body, _ = _parts(message)
    for part in (re.sub(r"\s+", " ", text), _visible(body)):
        assert part.index("Votre smartphone ou une tablette") < part.index("Un ordinateur")
        assert "C'est simple, il vous suffira de cliquer sur le lien" in part


def test_computer_path_first_for_computer_users(build) -> None:
    _, _, message = build(device=Device.COMPUTER)
    text, body, _ = _parts(message)
    for part in (re.sub(r"\s+", " ", text), _visible(body)):
        assert part.index("Un ordinateur") < part.index("Votre smartphone ou une tablette")
        assert "SÉLECTION DU TYPE DE TÉLÉPHONE" in part  # the other path is still there


def test_recording_authorised(build) -> None:
    _, _, message = build(recording_authorised=True)
    text, body, _ = _parts(message)
    for part in (re.sub(r"\s+", " ", text), _visible(body)):
        assert "Vous avez autorisé l'enregistrement" in part
        assert "pourra être enregistré" in part
        assert "ne sera pas enregistrée" not in part


def test_recording_refused(build) -> None:
    _, _, message = build(recording_authorised=False)
    text, body, _ = _parts(message)
    for part in (re.sub(r"\s+", " ", text), _visible(body)):
        assert "Vous avez refusé l'enregistrement : la session ne sera pas enregistrée." in part
        assert "pourra être enregistré" not in part


def test_charter_has_its_seven_points(build) -> None:
    _, _, message = build()
    text, body, _ = _parts(message)
    numbered = re.findall(r"^(\d)\. (\w[\w ]*) :", text, flags=re.MULTILINE)
    assert [number for number, _ in numbered] == ["1", "2", "3", "4", "5", "6", "7"]
    assert numbered[0][1] == "Ponctualité"
    point_7 = next(line for line in text.splitlines() if line.startswith("7. "))
    assert "batterie" in point_7
    charter = body[body.index("<ol") : body.index("</ol>")]
    assert charter.count("<li") == 7
    assert "Ponctualité" in charter and "batterie" in charter


def test_the_invitation_parses_back(build, settings) -> None:
    appointment, meeting, message = build(
        start=datetime.fromisoformat("2026-12-03T10:00:00+04:00"),
        timezone="Indian/Reunion",
        caf_code="974",
        revision=3,
        duration_minutes=45,
    )
    _, _, part = _parts(message)
    assert part.get_param("method") == "REQUEST"
    assert part.get_filename() == "rendez-vous-caf.ics"
    calendar = icalendar.Calendar.from_ical(part.get_content())
    assert calendar["METHOD"] == "REQUEST"
    [timezone] = calendar.walk("VTIMEZONE")
    assert timezone["TZID"] == "Indian/Reunion"
    [event] = calendar.walk("VEVENT")
    assert event["UID"] == f"{appointment.appointment_id}@visio-rdv.caf.fr"
    assert event["SEQUENCE"] == 3
    assert event["DTSTART"].params["TZID"] == "Indian/Reunion"
    start = event.decoded("DTSTART")
    assert (start.hour, start.minute) == (10, 0)
    assert start == appointment.start
    assert event.decoded("DTEND") - start == timedelta(minutes=45)
    assert str(event["URL"]) == meeting.join_url
    assert meeting.join_url in str(event["DESCRIPTION"])
    assert str(event["LOCATION"]) == "Microsoft Teams"
    assert str(event["ORGANIZER"]) == "mailto:visio-rdv@caf.fr"
    assert str(event["ATTENDEE"]) == "mailto:amina.hoarau@example.org"
    assert "Prime d'activité" in str(event["SUMMARY"])
    # The raw text, as a calendar client reads it.
    raw = (
        part.get_content().decode() if isinstance(part.get_content(), bytes) else part.get_content()
    )
    assert "DTSTART;TZID=Indian/Reunion:20261203T100000" in raw.replace("\r\n", "\n")


def test_paris_invitation_carries_its_summer_and_winter_rules(build) -> None:
    _, _, message = build(start=datetime(2026, 12, 3, 9, 0, tzinfo=UTC), timezone="Europe/Paris")
    _, _, part = _parts(message)
    calendar = icalendar.Calendar.from_ical(part.get_content())
    [timezone] = calendar.walk("VTIMEZONE")
    assert {component.name for component in timezone.subcomponents} == {"STANDARD", "DAYLIGHT"}
    [event] = calendar.walk("VEVENT")
    assert event.decoded("DTSTART").hour == 10


@pytest.mark.parametrize(
    "url",
    [
        "https://teams.microsoft.com/l/meetup-join/19%3ameeting_abc%40thread.v2/0?context=%7b%7d",
        "https://teams.microsoft.com/meet/1234567890?p=abcdef",
    ],
)
def test_teams_urls_are_allowed(url, settings) -> None:
    assert join_url_allowed(url, settings.teams_url_allowlist)


@pytest.mark.parametrize(
    "url",
    [
        "http://teams.microsoft.com/l/meetup-join/abc",
        "https://teams.microsoft.com.evil.example/l/meetup-join/abc",
        "https://evil.example/l/meetup-join/abc",
        "https://user@teams.microsoft.com/l/meetup-join/abc",
        "https://teams.microsoft.com:8443/l/meetup-join/abc",
        'https://teams.microsoft.com/l/meetup-join/abc" onclick="alert(1)',
        "https://teams.microsoft.com/l/meetup-join/abc<script>",
        "https://teams.microsoft.com/l/meetup-join/",
        "https://teams.microsoft.com/l/chat/abc",
        "javascript:alert(1)//https://teams.microsoft.com/l/meetup-join/",
        "https://teams.microsoft.com/l/meetup-join/a b",
    ],
)
def test_other_urls_are_not(url, settings) -> None:
    assert not join_url_allowed(url, settings.teams_url_allowlist)


def test_a_prefix_without_a_path_does_not_open_other_hosts() -> None:
    assert not join_url_allowed(
        "https://teams.microsoft.com.evil.example/x", ["https://teams.microsoft.com"]
    )


def test_server_answers_lose_their_addresses() -> None:
    assert redact("5.1.1 <amina.hoarau@example.org>: Recipient address rejected") == (
        "5.1.1 <[adresse]>: Recipient address rejected"
    )
