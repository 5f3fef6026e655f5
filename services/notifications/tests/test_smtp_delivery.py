"""The mailer against a real SMTP server (the project's aiosmtpd sink, on a free port): what
lands in the mailbox, how the relay's answers are classified, TLS and login from settings, and
the limit on messages in flight."""

from __future__ import annotations

import asyncio
import ssl
import threading
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from pydantic import SecretStr
from visio_fakes.devca import ensure_dev_ca
from visio_fakes.smtp_sink import MailSink, free_port, start_sink
from visio_notifications.compose import Letter, compose
from visio_notifications.mailer import MailRejected, SmtpMailer
from visio_runtime.errors import Transient, classify
from visio_runtime.metrics import Metrics


@pytest.fixture
def message(make, smtp_settings):
    def message(**fields):
        appointment = make.appointment(**fields)
        letter = Letter("confirmation", 1, appointment, join_url=make.meeting(appointment).join_url)
        return compose(letter, smtp_settings, now=appointment.start.replace(month=11, day=20))

    return message


async def test_the_email_arrives_whole(smtp_settings, message, mailbox, parts) -> None:
    sent = message(first_name="Hélène", last_name="Payet", timezone="Indian/Reunion")
    await SmtpMailer(smtp_settings).send(sent)

    [received] = mailbox.messages()
    assert received["Message-ID"] == sent["Message-ID"]
    assert received["Subject"] == sent["Subject"]
    assert received["To"].addresses[0].display_name == "Hélène Payet"
    assert parts.text(received).startswith("Bonjour Hélène,")
    assert "heure de La Réunion" in parts.text(received)
    assert parts.calendar(received)["METHOD"] == "REQUEST"


@pytest.mark.parametrize("fault", ["451", "drop"])
async def test_a_451_or_a_cut_line_is_transient_and_the_resend_keeps_the_message_id(
    sink, smtp_settings, message, mailbox, fault
) -> None:
    sent = message()
    metrics = Metrics("notifications")
    mailer = SmtpMailer(smtp_settings, metrics)
    if fault == "451":
        sink.handler.fail_next(1)
    else:
        sink.handler.drop_next(1)
    with pytest.raises(Transient) as caught:
        await mailer.send(sent)
    assert classify(caught.value) == "retry"
    assert mailbox.messages() == []

    await mailer.send(sent)
    [received] = mailbox.messages()
    assert received["Message-ID"] == sent["Message-ID"]
    assert metrics.value("smtp_sends_total", outcome="deferred") == 1
    assert metrics.value("smtp_sends_total", outcome="sent") == 1


async def test_a_refused_recipient_is_permanent_with_its_code_and_no_address(
    sink, smtp_settings, message, mailbox
) -> None:
    sink.handler.refuse_recipients.add("gone@example.org")
    metrics = Metrics("notifications")
    with pytest.raises(MailRejected) as caught:
        await SmtpMailer(smtp_settings, metrics).send(message(email="gone@example.org"))
    assert (caught.value.code, caught.value.partial) == (550, False)
    assert metrics.value("smtp_sends_total", outcome="rejected") == 1
    assert "gone@example.org" not in str(caught.value)
    assert mailbox.messages() == []


async def test_a_partial_refusal_is_not_taken_for_success(
    sink, smtp_settings, message, mailbox
) -> None:
    sent = message()
    del sent["To"]
    sent["To"] = "Amina Hoarau <amina.hoarau@example.org>, Archive <gone@example.org>"
    sink.handler.refuse_recipients.add("gone@example.org")
    with pytest.raises(MailRejected) as caught:
        await SmtpMailer(smtp_settings).send(sent)
    assert (caught.value.code, caught.value.partial) == (550, True)
    assert "1 of 2 recipients refused" in caught.value.detail
    assert len(mailbox.messages()) == 1  # the relay did take it for the other one


async def test_no_relay_is_transient(settings, message) -> None:
    settings = settings.model_copy(update={"smtp_port": free_port(), "smtp_timeout_s": 5})
    with pytest.raises(Transient):
        await SmtpMailer(settings).send(message())


@pytest.fixture
def dev_ca(tmp_path_factory):
    ca = ensure_dev_ca(tmp_path_factory.mktemp("ca"))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(ca.server_cert, ca.server_key)
    return ca, server


# aiosmtpd warns about AUTH without STARTTLS even when the whole connection is TLS.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
@pytest.mark.parametrize("mode", ["starttls", "tls"])
async def test_tls_and_login_from_settings(tmp_path, settings, message, dev_ca, mode) -> None:
    ca, server_tls = dev_ca
    controller = start_sink(
        tmp_path / "secure",
        tls_context=server_tls,
        implicit_tls=mode == "tls",
        credentials={"visio-rdv": "relay-secret"},
    )
    try:
        secure = settings.model_copy(
            update={
                "smtp_port": controller.port,
                "smtp_starttls": mode == "starttls",
                "smtp_tls": mode == "tls",
                "smtp_ca_file": ca.ca_cert,
                "smtp_username": "visio-rdv",
                "smtp_password": SecretStr("relay-secret"),
            }
        )
        await SmtpMailer(secure).send(message())
        wrong = secure.model_copy(update={"smtp_password": SecretStr("nope")})
        with pytest.raises(Transient, match="authentication"):  # ours to fix, then replay
            await SmtpMailer(wrong).send(message())
    finally:
        controller.stop()
    assert len(list((tmp_path / "secure").glob("*.eml"))) == 1


def test_credentials_without_tls_are_refused(settings) -> None:
    with pytest.raises(ValueError, match="in clear"):
        settings.model_validate({"smtp_username": "visio-rdv", "smtp_password": "x"})


class _Busy(MailSink):
    """A sink that holds each message a moment and counts how many are in at once."""

    def __init__(self, mail_dir: Path) -> None:
        super().__init__(mail_dir)
        self.in_flight = 0
        self.most = 0
        self._count = threading.Lock()

    async def handle_DATA(self, server, session, envelope) -> str:
        with self._count:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        await asyncio.sleep(0.05)  # load, not synchronisation: keeps sessions overlapping
        with self._count:
            self.in_flight -= 1
        return await super().handle_DATA(server, session, envelope)


async def test_at_most_the_configured_messages_in_flight(tmp_path, settings, message) -> None:
    busy = _Busy(tmp_path / "busy")
    controller = Controller(busy, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        limited = settings.model_copy(
            update={"smtp_port": controller.port, "smtp_max_connections": 2}
        )
        mailer = SmtpMailer(limited)
        await asyncio.gather(*(mailer.send(message()) for _ in range(6)))
    finally:
        controller.stop()
    assert busy.received == 6
    assert busy.most == 2
