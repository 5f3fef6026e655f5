"""Every kind of email as the relay receives it (built, serialised, parsed back with the
standard library and icalendar): MIME structure, headers, HTML built for mail clients, the
French words of each kind and device, escaping, and the .ics rules."""

from __future__ import annotations

import email
import html
import re
import uuid
from datetime import UTC, datetime, timedelta
from email import policy
from email.headerregistry import Address
from typing import Any
from zoneinfo import ZoneInfo

import icalendar
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from icalendar.parser import Contentline
from visio_notifications.compose import PALETTE, Letter, compose
from visio_notifications.decide import LinkRequest, Told, recipient_sha256
from visio_notifications.invitation import build_invitation, fold, to_ical
from visio_notifications.mailer import redact
from visio_runtime.teams import join_url_allowed
from visio_shared import Device

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
REUNION_START = datetime.fromisoformat("2026-12-03T10:00:00+04:00")
KINDS = (
    "confirmation",
    "rescheduled",
    "contact_corrected",
    "advisor_changed",
    "cancellation",
    "reminder",
    "meeting_unavailable",
    "link_resent",
)
REQUEST = LinkRequest(uuid.UUID("1b2c3d4e-5f60-4718-9a2b-3c4d5e6f7081"), "resend", NOW)
CALENDAR_KINDS = {"confirmation", "rescheduled", "contact_corrected", "advisor_changed"}
JOIN_URL = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_abc%40thread.v2/0?context=%7b%7d"
OLD_URL = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_old%40thread.v2/0"


@pytest.fixture
def build(make, settings):
    """build(kind, **appointment fields) → (appointment, parsed message)."""

    def build(kind: str, *, now: datetime = NOW, reason: str = "user", **fields: Any):
        revision = 1 if kind in ("confirmation", "reminder", "meeting_unavailable") else 2
        appointment = make.appointment(revision=revision, **fields)
        previous = Told(
            kind="confirmation",
            revision=1,
            status="sent",
            recipient_sha256=recipient_sha256(str(appointment.user.email)),
            device=str(appointment.user.device),
            start_at=appointment.start - timedelta(days=1) if kind == "rescheduled" else None,
            duration_minutes=appointment.duration_minutes,
            join_url=OLD_URL,
        )
        letter = Letter(
            kind=kind,
            revision=revision,
            appointment=appointment,
            join_url=None if kind in ("cancellation", "meeting_unavailable") else JOIN_URL,
            previous=previous if kind in ("rescheduled", "advisor_changed") else None,
            cancellation=make.cancelled(appointment, revision, reason),
            reminder_offset_minutes=60 if kind == "reminder" else None,
            link_sent_before=kind != "confirmation",
            request=REQUEST if kind == "link_resent" else None,
        )
        message = compose(letter, settings, now=now)
        return appointment, email.message_from_bytes(bytes(message), policy=policy.default)

    return build


def _visible(body: str) -> str:
    """The HTML part as a reader sees it: no tags, entities decoded, plain spaces."""
    text = html.unescape(re.sub(r"<[^>]+>", " ", body)).replace("\u00a0", " ")
    return re.sub(r"\s+", " ", text)


def _both(parts, message) -> list[str]:
    """The text part and the visible HTML, each on one line."""
    return [re.sub(r"\s+", " ", parts.text(message)), _visible(parts.html(message))]


# --- Structure and headers ------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_structure_and_headers(build, parts, kind) -> None:
    appointment, message = build(kind)
    if kind in CALENDAR_KINDS | {"cancellation"}:
        assert message.get_content_type() == "multipart/mixed"
        alternative, attachment = message.iter_parts()
        assert [p.get_content_type() for p in alternative.iter_parts()] == [
            "text/plain",
            "text/html",
            "text/calendar",
        ]
        assert attachment.get_content_disposition() == "attachment"
        parts.calendar(message)  # method= of both parts equals the calendar's METHOD
    else:  # reminders, "no meeting" and the email asked again change nothing in a calendar
        assert message.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    revision = 1 if kind in ("confirmation", "reminder", "meeting_unavailable") else 2
    suffix = {"reminder": "-60", "link_resent": f"-{REQUEST.event_id.hex}"}.get(kind, "")
    assert message["Message-ID"] == (
        f"<{appointment.appointment_id}.r{revision}.{kind}{suffix}@visio-rdv.caf.fr>"
    )
    assert message["From"].addresses[0].addr_spec == "visio-rdv@caf.fr"
    assert message["To"].addresses[0].addr_spec == "amina.hoarau@example.org"
    assert message["To"].addresses[0].display_name == "Amina Hoarau"
    assert message["Date"].datetime == NOW
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Content-Language"] == "fr"
    assert message["Reply-To"] is None
    assert "Merci de ne pas y répondre" in parts.text(message)


def test_a_reply_to_setting_is_a_header_and_changes_the_footer(make, settings, parts) -> None:
    settings = settings.model_copy(update={"reply_to": "Caf de Paris <contact@caf75.caf.fr>"})
    appointment = make.appointment()
    letter = Letter("confirmation", 1, appointment, join_url=JOIN_URL)
    message = compose(letter, settings, now=NOW)
    assert message["Reply-To"].addresses[0].addr_spec == "contact@caf75.caf.fr"
    assert "vous pouvez y répondre" in parts.text(message)


@pytest.mark.parametrize("kind", KINDS)
def test_html_is_built_for_mail_clients(build, parts, kind) -> None:
    _, message = build(kind)
    body = parts.html(message)
    assert '<html lang="fr"' in body
    assert 'name="viewport" content="width=device-width, initial-scale=1"' in body
    tables = re.findall(r"<table[^>]*>", body)
    assert tables and all('role="presentation"' in table for table in tables)
    assert "max-width: 600px" in body  # one column, fluid below 600 px
    # CSS inlined: the only rules left in <style> are for narrow screens.
    [style] = re.findall(r"<style>(.*?)</style>", body, flags=re.DOTALL)
    assert style.strip().startswith("@media (max-width: 480px)")
    assert re.search(r'<td class="header" style="[^"]*background-color: #0a4f96', body)
    assert "<img" not in body  # no logo configured: nothing that needs an image to be read


def test_a_logo_has_its_alt_text(make, settings, parts) -> None:
    settings = settings.model_copy(update={"logo_url": "https://www.caf.fr/logo.png"})
    letter = Letter("confirmation", 1, make.appointment(), join_url=JOIN_URL)
    body = parts.html(compose(letter, settings, now=NOW))
    images = re.findall(r"<img[^>]*>", body)
    assert images and all(re.search(r'alt="[^"]+"', image) for image in images)


def _luminance(colour: str) -> float:
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _contrast(a: str, b: str) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


@pytest.mark.parametrize(
    ("text", "background"),
    [
        ("text", "card"),
        ("muted", "card"),
        ("brand", "card"),
        ("brand", "brand_light"),
        ("text", "brand_light"),
        ("muted", "footer"),
        ("alert", "alert_light"),
        ("text", "alert_light"),
    ],
)
def test_every_text_colour_passes_wcag_aa(text, background) -> None:
    assert _contrast(PALETTE[text], PALETTE[background]) >= 4.5
    assert _contrast("#ffffff", PALETTE["brand"]) >= 4.5  # the button and the header


# --- What each kind says --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "subject", "phrases"),
    [
        (
            "confirmation",
            "Votre rendez-vous visio avec la Caf le jeudi 3 décembre à 10 h 00",
            [
                "Votre rendez-vous visio avec la Caf est confirmé.",
                "un rendez-vous efficace et agréable",
            ],
        ),
        (
            "contact_corrected",
            "Votre rendez-vous visio avec la Caf le jeudi 3 décembre à 10 h 00",
            ["Vos coordonnées ont été corrigées", "un rendez-vous efficace et agréable"],
        ),
        (
            "rescheduled",
            "Votre rendez-vous visio avec la Caf est déplacé au jeudi 3 décembre à 10 h 00",
            [
                "Avant : mercredi 2 décembre 2026 à 10 h 00",
                "Désormais : jeudi 3 décembre 2026 à 10 h 00 (heure de La Réunion)",
                "Le lien pour rejoindre le rendez-vous ne change pas.",
            ],
        ),
        (
            "advisor_changed",
            "Nouveau lien pour votre rendez-vous visio avec la Caf le jeudi 3 décembre à 10 h 00",
            [
                "Votre rendez-vous visio avec la Caf sera assuré par Claire Martin.",
                "Il remplace celui du message précédent, qui ne fonctionne plus.",
            ],
        ),
        (
            "cancellation",
            "Votre rendez-vous visio avec la Caf du jeudi 3 décembre à 10 h 00 est annulé",
            [
                "Comme vous l'avez demandé, votre rendez-vous visio avec la Caf du jeudi "
                "3 décembre 2026 à 10 h 00 (heure de La Réunion) est annulé.",
                "Le lien du rendez-vous ne fonctionnera plus.",
                "prendre un nouveau rendez-vous",
            ],
        ),
        (
            "reminder",
            "Rappel : votre rendez-vous visio avec la Caf le jeudi 3 décembre à 10 h 00",
            ["Nous vous rappelons votre rendez-vous", "Chargez la batterie"],
        ),
        (
            "link_resent",
            "Le lien de votre rendez-vous visio avec la Caf le jeudi 3 décembre à 10 h 00",
            [
                "Comme vous l'avez demandé, voici à nouveau les informations de votre rendez-vous",
                "Voir, annuler ou recevoir à nouveau le lien",
                "Installer",
            ],
        ),
        (
            "meeting_unavailable",
            "Votre rendez-vous avec la Caf du jeudi 3 décembre à 10 h 00 : votre Caf va vous "
            "contacter",
            [
                "Nous n'avons pas pu préparer la visio de votre rendez-vous",
                "La Caf de La Réunion vous contactera pour convenir de la suite.",
            ],
        ),
    ],
)
def test_what_each_kind_says(build, parts, kind, subject, phrases) -> None:
    _, message = build(kind, start=REUNION_START, timezone="Indian/Reunion", caf_code="974")
    assert message["Subject"] == subject
    for part in _both(parts, message):
        assert part.startswith("Bonjour Amina,") or "Bonjour Amina," in part
        for phrase in phrases:
            assert phrase in part, (kind, phrase)
        if kind in ("cancellation", "meeting_unavailable"):
            assert "teams.microsoft.com" not in part  # no link to a meeting that is gone
        else:
            assert JOIN_URL in part


def test_the_join_link_is_a_button_and_visible_text(build, parts) -> None:
    _, message = build("confirmation")
    body = parts.html(message)
    href = html.escape(JOIN_URL, quote=True)
    assert re.search(rf'<a class="button" href="{re.escape(href)}"[^>]*>Rejoindre le', body)
    assert f">{href}</a>" in body


@pytest.mark.parametrize(
    ("reason", "words"),
    [
        ("user", "Comme vous l'avez demandé"),
        ("advisor", "Votre conseiller Caf ne peut pas assurer votre rendez-vous"),
        ("administrative", "La Caf de Paris a annulé votre rendez-vous"),
    ],
)
def test_a_cancellation_says_by_whom_in_words_the_reason_allows(
    build, parts, reason, words
) -> None:
    _, message = build("cancellation", reason=reason)
    text = parts.text(message)
    assert words in text
    assert "caf.fr" not in text.split("https://")[0]  # never the calling system's name


def test_a_reminder_says_today_or_tomorrow(build) -> None:
    _, tomorrow = build("reminder", now=datetime(2026, 12, 2, 9, 0, tzinfo=UTC))
    _, soon = build("reminder", now=datetime(2026, 12, 3, 8, 0, tzinfo=UTC))
    assert tomorrow["Subject"] == "Rappel : votre rendez-vous visio avec la Caf demain à 10 h 00"
    assert soon["Subject"] == "Rappel : votre rendez-vous visio avec la Caf aujourd'hui à 10 h 00"


# --- Device variants ------------------------------------------------------------------------


@pytest.mark.parametrize("device", [Device.SMARTPHONE, Device.TABLET])
@pytest.mark.parametrize("kind", ["confirmation", "rescheduled", "reminder"])
def test_phone_and_tablet_users_get_their_path_first(build, parts, device, kind) -> None:
    _, message = build(kind, device=device)
    for part in _both(parts, message):
        assert part.index("Votre smartphone ou une tablette") < part.index("Un ordinateur")
        assert "installez l'application Microsoft Teams avant le rendez-vous" in part
        assert "C'est simple, il vous suffira de cliquer sur le lien" in part  # still there


def test_computer_users_get_their_path_first_and_the_other_still(build, parts, settings) -> None:
    _, message = build("confirmation", device=Device.COMPUTER)
    for part in _both(parts, message):
        assert part.index("Un ordinateur") < part.index("Votre smartphone ou une tablette")
        for words in (
            "SÉLECTION DU TYPE DE TÉLÉPHONE",
            "iPhone ou iPad : App Store",
            "Android : Google Play",
            "Cliquer sur « Installer »",
            "Cliquer sur « Rejoindre la réunion » puis sur « Participer à la réunion »",
            "Renseigner votre nom puis cliquer sur le bouton « Participer à la réunion »",
            "Autoriser Teams à utiliser votre micro",
            "d'un micro",
            "d'une webcam",
            "d'une connexion internet suffisante",
            "Hors coûts liés à votre opérateur pour l'accès internet",
        ):
            assert words in part, words
    assert settings.app_store_url in parts.text(message)


def test_a_smartphone_reminder_asks_to_check_the_app(build, parts) -> None:
    _, phone = build("reminder", device=Device.SMARTPHONE)
    _, computer = build("reminder", device=Device.COMPUTER)
    check = "Vérifiez que l'application Microsoft Teams est installée sur votre smartphone."
    assert check in parts.text(phone)
    assert "Vérifiez que l'application" not in parts.text(computer)


@pytest.mark.parametrize(
    ("authorised", "present", "absent"),
    [
        (True, "Vous avez autorisé l'enregistrement", "ne sera pas enregistrée"),
        (False, "Vous avez refusé l'enregistrement : la session ne sera pas enregistrée.", None),
    ],
)
def test_the_recording_line_matches_the_choice(build, parts, authorised, present, absent) -> None:
    _, message = build("confirmation", recording_authorised=authorised)
    for part in _both(parts, message):
        assert present in part
        assert (absent or "pourra être enregistré") not in part


def test_the_charter_has_its_seven_points_battery_last(build, parts) -> None:
    _, message = build("confirmation")
    text = parts.text(message)
    numbered = re.findall(r"^(\d)\. (\w[\w ]*) :", text, flags=re.MULTILINE)
    assert [number for number, _ in numbered] == ["1", "2", "3", "4", "5", "6", "7"]
    assert "batterie" in next(line for line in text.splitlines() if line.startswith("7. "))
    body = parts.html(message)
    assert body[body.index("<ol") : body.index("</ol>")].count("<li") == 7


# --- Escaping -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_what_people_typed_is_escaped(build, parts, kind) -> None:
    _, message = build(
        kind,
        advisor_name="<script>alert('x')</script>",
        first_name="<b>Amina</b>",
        subject='Objet" onmouseover="alert(1)',
    )
    body = parts.html(message)
    assert "<script>" not in body and "<b>Amina</b>" not in body
    assert "&lt;b&gt;Amina&lt;/b&gt;" in body
    assert not re.search(r"<[^>]*onmouseover", body)  # text, never an attribute
    assert "<b>Amina</b>" in parts.text(message)  # the text part shows it as typed


def test_a_newline_in_a_name_never_becomes_a_header(build) -> None:
    _, message = build("confirmation", first_name="Amina\r\nBcc: someone@evil.example")
    assert message["Bcc"] is None
    assert [a.addr_spec for a in message["To"].addresses] == ["amina.hoarau@example.org"]


# --- The .ics -------------------------------------------------------------------------------


def test_the_invitation(build, parts) -> None:
    appointment, message = build(
        "confirmation", start=REUNION_START, timezone="Indian/Reunion", caf_code="974"
    )
    calendar = parts.calendar(message)
    assert calendar["METHOD"] == "REQUEST"
    assert calendar.walk("VTIMEZONE")[0]["TZID"] == "Indian/Reunion"
    [event] = calendar.walk("VEVENT")
    assert event["UID"] == f"{appointment.appointment_id}@visio-rdv.caf.fr"
    assert event["SEQUENCE"] == 1
    assert event.decoded("DTSTAMP") == NOW
    assert event["DTSTART"].params["TZID"] == "Indian/Reunion"
    assert event.decoded("DTSTART") == appointment.start
    assert event.decoded("DTEND") - appointment.start == timedelta(minutes=30)
    assert event["STATUS"] == "CONFIRMED"
    assert str(event["ORGANIZER"]) == "mailto:visio-rdv@caf.fr"  # not the advisor
    attendee = event["ATTENDEE"]
    assert str(attendee) == "mailto:amina.hoarau@example.org"
    assert attendee.params["RSVP"] == "FALSE"
    for field in ("LOCATION", "URL"):
        assert str(event[field]) == JOIN_URL
    assert JOIN_URL in str(event["DESCRIPTION"])
    [alarm] = event.walk("VALARM")
    assert alarm["ACTION"] == "DISPLAY"
    assert alarm.decoded("TRIGGER") == -timedelta(minutes=15)


# Lines of every length around the fold (74, 75, 148 octets), with characters of 1 to 4
# octets, and the backslashes and carets a fold must not leave at the end of a piece.
_LINE_TEXT = st.text(
    alphabet=st.sampled_from(["a", "\\", "^", ",", ";", ":", '"', "é", "’", "€", "𝄞", " "]),
    max_size=240,
)


@hypothesis_settings(max_examples=400, deadline=None, database=None)
@given(prefix=st.text(alphabet="abcdefghij", max_size=80), text=_LINE_TEXT)
def test_lines_fold_as_icalendar_folds_them(prefix: str, text: str) -> None:
    """`invitation.fold` cuts in the bytes what icalendar cuts character by character: the
    same bytes for any line (fails on an off-by-one, a cut inside a character or after an
    escape)."""
    line = prefix + text
    assert fold(line) == Contentline(line).to_ical()


@hypothesis_settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(subject=_LINE_TEXT, name=_LINE_TEXT)
def test_an_invitation_is_the_bytes_icalendar_writes(make, subject: str, name: str) -> None:
    """A whole invitation (zone, alarm, quoted parameters) with names and subjects of any
    length: `invitation.to_ical` writes it as icalendar's own `to_ical` does."""
    appointment = make.appointment(subject=subject or "Prime", advisor_name=name[:200] or "C")
    calendar = icalendar.Calendar.from_ical(
        build_invitation(
            appointment,
            JOIN_URL,
            method="REQUEST",
            start=appointment.start.astimezone(ZoneInfo("Europe/Paris")),
            organizer=Address("Caf de Paris", addr_spec="visio-rdv@caf.fr"),
            attendee=Address(f"Amina {name}", addr_spec="amina.hoarau@example.org"),
            domain="visio-rdv.caf.fr",
            now=NOW,
        )
    )
    assert to_ical(calendar) == calendar.to_ical()


def test_a_paris_invitation_carries_summer_and_winter_rules(build, parts) -> None:
    _, message = build("confirmation")
    [timezone] = parts.calendar(message).walk("VTIMEZONE")
    assert {component.name for component in timezone.subcomponents} == {"STANDARD", "DAYLIGHT"}


def test_a_cancellation_cancels_the_same_event(build, parts) -> None:
    appointment, message = build("cancellation")
    calendar = parts.calendar(message)
    assert calendar["METHOD"] == "CANCEL"
    [event] = calendar.walk("VEVENT")
    assert event["UID"] == f"{appointment.appointment_id}@visio-rdv.caf.fr"
    assert event["SEQUENCE"] == 2
    assert event["STATUS"] == "CANCELLED"
    assert "URL" not in event and not event.walk("VALARM")


# --- The join URL allow-list ----------------------------------------------------------------


@pytest.mark.parametrize("url", [JOIN_URL, "https://teams.microsoft.com/meet/1234567890?p=abcdef"])
def test_teams_urls_are_allowed(url, settings) -> None:
    assert join_url_allowed(url, settings.teams_url_allowlist)


@pytest.mark.parametrize(
    "url",
    [
        "http://teams.microsoft.com/l/meetup-join/abc",
        "https://teams.microsoft.com.evil.example/l/meetup-join/abc",
        "https://user@teams.microsoft.com/l/meetup-join/abc",
        "https://teams.microsoft.com:8443/l/meetup-join/abc",
        'https://teams.microsoft.com/l/meetup-join/abc" onclick="alert(1)',
        "https://teams.microsoft.com/l/meetup-join/abc<script>",
        "https://teams.microsoft.com/l/meetup-join/",
        "https://teams.microsoft.com/l/chat/abc",
        "javascript:alert(1)//https://teams.microsoft.com/l/meetup-join/",
        "https://teams.microsoft.com/l/meetup-join/a b",
        "",
    ],
)
def test_other_urls_are_not(url, settings) -> None:
    assert not join_url_allowed(url, settings.teams_url_allowlist)


def test_server_answers_lose_their_addresses() -> None:
    assert redact("5.1.1 <amina.hoarau@example.org>: Recipient address rejected") == (
        "5.1.1 <[adresse]>: Recipient address rejected"
    )
