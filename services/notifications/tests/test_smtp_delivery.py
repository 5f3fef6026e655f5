"""The mailer against a real SMTP server (the project's aiosmtpd sink, on a free port): what
lands in the mailbox, and how the relay's answers are classified."""

from __future__ import annotations

import email
from email import policy
from pathlib import Path

import icalendar
import pytest
from visio_deploy.smtp_sink import free_port, start_sink
from visio_notifications.mailer import MailRejected, SmtpMailer, build_confirmation
from visio_runtime.errors import Transient, classify


@pytest.fixture
def sink(tmp_path: Path):
    controller = start_sink(tmp_path / "mail", "127.0.0.1", 0)
    try:
        yield controller
    finally:
        controller.stop()


@pytest.fixture
def smtp_settings(settings, sink):
    return settings.model_copy(update={"smtp_host": sink.hostname, "smtp_port": sink.port})


def _mail_dir(sink) -> Path:
    return sink.handler.mail_dir


async def test_the_email_arrives_whole(
    sink, smtp_settings, new_appointment, new_meeting, until
) -> None:
    appointment = new_appointment(
        first_name="Hélène", last_name="Payet", caf_code="974", timezone="Indian/Reunion"
    )
    meeting = new_meeting(appointment)
    message = build_confirmation(appointment, meeting, smtp_settings)

    await SmtpMailer(smtp_settings).send(message)

    await until(lambda: len(list(_mail_dir(sink).glob("*.eml"))) == 1)
    [stored] = list(_mail_dir(sink).glob("*.eml"))
    assert stored.name == f"{appointment.appointment_id}.r1.confirmation@visio-rdv.caf.fr.eml"
    received = email.message_from_bytes(stored.read_bytes(), policy=policy.default)
    assert (
        received["Message-ID"] == f"<{appointment.appointment_id}.r1.confirmation@visio-rdv.caf.fr>"
    )
    assert received["Subject"] == message["Subject"]
    assert received["To"].addresses[0].display_name == "Hélène Payet"
    assert received["To"].addresses[0].addr_spec == "amina.hoarau@example.org"
    assert received["Auto-Submitted"] == "auto-generated"
    text = received.get_body(preferencelist=("plain",)).get_content()
    body = received.get_body(preferencelist=("html",)).get_content()
    assert text.startswith("Bonjour Hélène,")
    assert meeting.join_url in text
    assert "heure de La Réunion" in text
    assert "Rejoindre le rendez-vous" in body
    [invitation] = [part for part in received.walk() if part.get_content_type() == "text/calendar"]
    calendar = icalendar.Calendar.from_ical(invitation.get_content())
    assert calendar.walk("VEVENT")[0]["UID"] == f"{appointment.appointment_id}@visio-rdv.caf.fr"


async def test_a_451_is_transient_and_the_resend_keeps_the_message_id(
    sink, smtp_settings, new_appointment, new_meeting
) -> None:
    appointment = new_appointment()
    message = build_confirmation(appointment, new_meeting(appointment), smtp_settings)
    mailer = SmtpMailer(smtp_settings)
    sink.handler.fail_next(1)

    with pytest.raises(Transient) as caught:
        await mailer.send(message)
    assert classify(caught.value) == "retry"
    assert list(_mail_dir(sink).glob("*.eml")) == []

    await mailer.send(message)
    [stored] = list(_mail_dir(sink).glob("*.eml"))
    assert str(appointment.appointment_id) in stored.name


async def test_a_refused_recipient_is_permanent_and_not_logged(
    tmp_path, settings, new_appointment, new_meeting
) -> None:
    controller = start_sink(tmp_path / "mail", refuse_recipients=["gone@example.org"])
    try:
        settings = settings.model_copy(update={"smtp_port": controller.port})
        appointment = new_appointment(email="gone@example.org")
        message = build_confirmation(appointment, new_meeting(appointment), settings)
        with pytest.raises(MailRejected) as caught:
            await SmtpMailer(settings).send(message)
        assert caught.value.code == 550
        assert "gone@example.org" not in str(caught.value)
        assert list((tmp_path / "mail").glob("*.eml")) == []
    finally:
        controller.stop()


async def test_no_relay_is_transient(settings, new_appointment, new_meeting) -> None:
    settings = settings.model_copy(update={"smtp_port": free_port(), "smtp_timeout_s": 5})
    appointment = new_appointment()
    message = build_confirmation(appointment, new_meeting(appointment), settings)
    with pytest.raises(Transient):
        await SmtpMailer(settings).send(message)
