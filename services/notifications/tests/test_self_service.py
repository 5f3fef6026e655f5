"""« Gérer mon rendez-vous » in every kind of email, as the relay receives it: the links read
back by the pages' own `read_link` (right page, appointment, revision and expiry), URLs free of
personal data and of anything to escape, nothing in the .ics, nothing without keys; and the
`link_resent` email itself."""

from __future__ import annotations

import email
import html
import logging
import re
import uuid
from datetime import UTC, datetime, timedelta
from email import policy
from typing import Any

import pytest
from pydantic import ValidationError
from visio_notifications.compose import Letter, compose
from visio_notifications.decide import LinkRequest
from visio_notifications.self_service import warn_if_off
from visio_runtime.teams import URL_CHARACTERS
from visio_shared.links import LinkPurpose, read_link

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
JOIN_URL = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_abc%40thread.v2/0?context=%7b%7d"
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
ALL_PAGES = [LinkPurpose.MANAGE, LinkPurpose.RECORDING, LinkPurpose.CONSENTS]
PATHS = {
    LinkPurpose.MANAGE: "https://rdv.caf.example/booking/mon-rendez-vous/",
    LinkPurpose.RECORDING: "https://consentement.caf.example/enregistrement/",
    LinkPurpose.CONSENTS: "https://consentement.caf.example/mes-consentements/",
}
LINK = re.compile(r"https://(?:rdv|consentement)\.caf\.example/[^\s\"<]*")
REQUEST = LinkRequest(uuid.UUID("1b2c3d4e-5f60-4718-9a2b-3c4d5e6f7081"), "resend", NOW)


@pytest.fixture
def build(make, settings):
    """build(kind, settings=…, join_url=…, **appointment fields) → (appointment, message)."""

    def build(kind: str, *, settings: Any = settings, join_url: Any = JOIN_URL, **fields: Any):
        appointment = make.appointment(revision=3, **fields)
        letter = Letter(
            kind=kind,
            revision=3,
            appointment=appointment,
            join_url=None if kind in ("cancellation", "meeting_unavailable") else join_url,
            cancellation=make.cancelled(appointment, 3) if kind == "cancellation" else None,
            reminder_offset_minutes=60 if kind == "reminder" else None,
            link_sent_before=True,
            request=REQUEST if kind == "link_resent" else None,
        )
        message = compose(letter, settings, now=NOW)
        return appointment, email.message_from_bytes(bytes(message), policy=policy.default)

    return build


def _links(part: str) -> list[str]:
    """The self-service links of a part: signed, one per person. The CGU the person accepted
    (`/cgu/<version>`) is a public page, the same for everyone: not one of them."""
    return [url for url in LINK.findall(part) if "/cgu/" not in url]


def _page_of(url: str) -> tuple[LinkPurpose, str]:
    [purpose] = [purpose for purpose, path in PATHS.items() if url.startswith(path)]
    return purpose, url.removeprefix(PATHS[purpose])


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_carries_its_signed_links_in_html_and_text(
    build, parts, link_keys, kind
) -> None:
    appointment, message = build(kind)
    expected = [LinkPurpose.MANAGE, LinkPurpose.CONSENTS] if kind == "cancellation" else ALL_PAGES
    end = appointment.start + timedelta(minutes=appointment.duration_minutes)
    text, body = parts.text(message), parts.html(message)
    assert "GÉRER MON RENDEZ-VOUS" in text
    assert ">Gérer mon rendez-vous</h2>" in body
    hrefs = re.findall(r'<a class="page-link" href="([^"]+)"', body)
    for urls in (_links(text), hrefs):
        assert [_page_of(url)[0] for url in urls] == expected
        for url in urls:
            purpose, token = _page_of(url)
            claims = read_link(link_keys, token, purpose, now=NOW)
            assert claims.appointment_id == appointment.appointment_id
            assert claims.revision == appointment.revision == 3
            assert claims.expires_at == end + timedelta(days=30)
            assert claims.key_id == "t2"  # the first key of the ring signs
    assert sorted(hrefs) == sorted(_links(text))  # the same links in both parts
    # What the page is for, in words, next to each link.
    for words in ("Mon rendez-vous", "Mes consentements et leurs preuves"):
        assert words in text and words in body
    recording = "Mon choix sur l'enregistrement de l'entretien"
    assert (recording in text) is (kind != "cancellation")
    assert "Ils fonctionnent jusqu'au samedi 2 janvier 2027." in text


def test_a_cancelled_appointments_page_is_said_to_show_it_cancelled(build, parts) -> None:
    _, message = build("cancellation")
    for part in (parts.text(message), parts.html(message)):
        assert "Voir mon rendez-vous annulé" in part
        assert "Voir, annuler ou recevoir à nouveau le lien" not in part
        assert "/enregistrement/" not in part


@pytest.mark.parametrize("kind", KINDS)
def test_the_urls_carry_no_personal_data_and_nothing_to_escape(build, parts, kind) -> None:
    appointment, message = build(
        kind, first_name="Amina", last_name="Hoarau", email="amina.hoarau@example.org"
    )
    urls = _links(parts.text(message))
    assert urls
    for url in urls:
        _, token = _page_of(url)
        assert re.fullmatch(r"[A-Za-z0-9_-]{20,200}", token)  # opaque, base64url
        assert URL_CHARACTERS.fullmatch(url)
        assert html.escape(url, quote=True) == url  # the href is the URL, byte for byte
        for personal in (
            "amina",
            "hoarau",
            "example.org",
            str(appointment.appointment_id),
            appointment.appointment_id.hex,
            "claire",
        ):
            assert personal not in url.lower()


@pytest.mark.parametrize("kind", ["confirmation", "rescheduled", "advisor_changed", "cancellation"])
def test_the_ics_carries_no_self_service_link(build, parts, kind) -> None:
    _, message = build(kind)
    tokens = [_page_of(url)[1] for url in _links(parts.text(message))]
    calendars = [p for p in message.walk() if p.get_content_type() == "text/calendar"]
    assert len(calendars) == 2
    for part in calendars:
        ics = part.get_payload(decode=True).decode()
        unfolded = ics.replace("\r\n ", "")
        assert _links(unfolded) == []  # the public CGU page may be named, no signed page
        assert not any(token in unfolded for token in tokens)
        assert "mon-rendez-vous" not in unfolded


@pytest.mark.parametrize("kind", KINDS)
def test_without_link_keys_no_section(build, parts, settings, kind) -> None:
    unkeyed = settings.model_copy(update={"link_keys": None})
    _, message = build(kind, settings=unkeyed)
    for part in (parts.text(message), parts.html(message)):
        assert "rer mon rendez-vous" not in part.lower()  # « Gérer », in either case
        assert _links(part) == []  # no signed link (the public CGU page stays)
    assert "Bonjour Amina," in parts.text(message)  # the email itself is whole


def test_without_keys_one_warning_and_no_secret(settings, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="visio_notifications.self_service")
    warn_if_off(settings)
    assert caplog.records == []  # keys set: nothing to say
    warn_if_off(settings.model_copy(update={"link_keys": None}))
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "NOTIFICATIONS_LINK_KEYS" in record.getMessage()
    assert "aaaa" not in record.getMessage() and "bbbb" not in record.getMessage()


def test_the_validity_is_a_setting(build, parts, link_keys, settings) -> None:
    same_day = settings.model_copy(update={"link_valid_days_after_appointment": 0})
    appointment, message = build("confirmation", settings=same_day)
    purpose, token = _page_of(_links(parts.text(message))[0])
    claims = read_link(link_keys, token, purpose, now=NOW)
    assert claims.expires_at == appointment.start + timedelta(minutes=30)


@pytest.mark.parametrize(
    "url",
    [
        "https://rdv.caf.example/x?next=1",
        "https://rdv.caf.example/#top",
        "https://user:pw@rdv.caf.example",
        "javascript:alert(1)",
        "https://rdv.caf.example/a b",
        'https://rdv.caf.example/"onclick',
        "ftp://rdv.caf.example",
    ],
)
def test_a_public_url_that_would_need_escaping_is_refused(settings, url) -> None:
    with pytest.raises(ValidationError):
        settings.model_validate({"booking_public_url": url})


# --- The email asked for again --------------------------------------------------------------


def test_link_resent_with_the_join_link(build, parts) -> None:
    appointment, message = build("link_resent")
    assert (
        message["Subject"]
        == "Le lien de votre rendez-vous visio avec la Caf le jeudi 3 décembre à 10 h 00"
    )
    assert message["Message-ID"] == (
        f"<{appointment.appointment_id}.r3.link_resent-{REQUEST.event_id.hex}@visio-rdv.caf.fr>"
    )
    # No calendar: the person has the event already.
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    text = parts.text(message)
    assert text.startswith(
        "Bonjour Amina,\n\nComme vous l'avez demandé, voici à nouveau les informations de votre "
        "rendez-vous visio avec la Caf."
    )
    assert JOIN_URL in text and "Objet du rendez-vous : Prime d'activité" in text
    # What was asked for comes before the guide.
    assert text.index("GÉRER MON RENDEZ-VOUS") < text.index("GUIDE D'ACCÈS")
    assert text.count("GÉRER MON RENDEZ-VOUS") == 1
    assert parts.html(message).count(">Gérer mon rendez-vous</h2>") == 1


def test_link_resent_before_the_meeting_is_ready_says_the_link_will_follow(build, parts) -> None:
    _, message = build("link_resent", join_url=None)
    assert message["Subject"] == "Votre rendez-vous visio avec la Caf le jeudi 3 décembre à 10 h 00"
    text = parts.text(message)
    assert "Nous vous l'enverrons par email dès qu'il le sera." in text
    assert "cliquer sur le lien du rendez-vous que vous recevrez par email" in text
    assert "teams.microsoft.com" not in text and "teams.microsoft.com" not in parts.html(message)
    assert "GÉRER MON RENDEZ-VOUS" in text


def test_a_fresh_link_says_so(make, settings, parts) -> None:
    appointment = make.appointment()
    request = LinkRequest(uuid.uuid4(), "fresh_link", NOW)
    letter = Letter("link_resent", 1, appointment, join_url=JOIN_URL, request=request)
    text = parts.text(compose(letter, settings, now=NOW))
    assert "voici de nouveaux liens personnels pour votre rendez-vous" in text


# --- A fresh link after the appointment: « Mes consentements » alone --------------------------


@pytest.mark.parametrize(
    ("ended", "said"),
    [
        (
            "over",
            "Votre rendez-vous visio avec la Caf du jeudi 3 décembre 2026 à 10 h 00 "
            "(heure de Paris) est passé.",
        ),
        (
            "cancelled",
            "Votre rendez-vous visio avec la Caf du jeudi 3 décembre 2026 à 10 h 00 "
            "(heure de Paris) a été annulé.",
        ),
    ],
)
def test_after_the_appointment_a_fresh_link_is_the_consents_link_alone(
    make, settings, parts, link_keys, ended, said
) -> None:
    appointment = make.appointment(revision=2)
    asked_at = appointment.start + timedelta(days=45)  # the email's links expired long ago
    request = LinkRequest(uuid.uuid4(), "fresh_link", asked_at)
    letter = Letter(
        "link_resent",
        2,
        appointment,
        cancellation=make.cancelled(appointment, 2) if ended == "cancelled" else None,
        request=request,
        ended=ended,
    )
    message = email.message_from_bytes(
        bytes(compose(letter, settings, now=asked_at)), policy=policy.default
    )
    assert message["Subject"] == (
        "Vos consentements pour votre rendez-vous visio avec la Caf du jeudi 3 décembre 2026 à "
        "10 h 00"
    )
    assert message["Message-ID"] == (
        f"<{appointment.appointment_id}.r2.link_resent-{request.event_id.hex}@visio-rdv.caf.fr>"
    )
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    text, body = parts.text(message), parts.html(message)
    assert text.startswith(
        "Bonjour Amina,\n\nComme vous l'avez demandé, voici un nouveau lien vers vos "
        f"consentements.\n\n{said}\n\nCe lien ouvre « Mes consentements » : les consentements "
        "que vous avez donnés et leurs preuves"
    )
    assert said in html.unescape(body).replace("\u00a0", " ")
    hrefs = re.findall(r'<a class="page-link" href="([^"]+)"', body)
    for urls in (_links(text), hrefs):
        [url] = urls  # the consents, nothing to manage, nothing to choose
        purpose, token = _page_of(url)
        assert purpose is LinkPurpose.CONSENTS
        claims = read_link(link_keys, token, purpose, now=asked_at)
        assert (claims.appointment_id, claims.revision) == (appointment.appointment_id, 2)
        assert claims.expires_at == asked_at + timedelta(days=30)
    assert "Il fonctionne jusqu'au mardi 16 février 2027." in text
    for part in (text, body):
        assert "teams.microsoft.com" not in part
        assert "GÉRER MON RENDEZ-VOUS" not in part and "Gérer mon rendez-vous" not in part
        assert "Rejoindre" not in part and "Guide d'accès" not in part.replace("GUIDE", "Guide")
