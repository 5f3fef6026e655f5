"""The SMTP sink: every accepted message lands as one .eml, nothing is overwritten, faults come
on demand (451, refused recipients, a line cut mid-message), STARTTLS and login when asked, and
the console script stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP
from visio_fakes.devca import ensure_dev_ca
from visio_fakes.fault_draws import draw, pick
from visio_fakes.smtp_server import SinkSMTP
from visio_fakes.smtp_sink import MailSink, fault_subject, free_port, safe_id, start_sink


def _message(
    message_id: str | None = "<a1.r1.confirmation@visio-rdv.caf.fr>", body: str = "Bonjour"
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Caf - Visio RDV <visio-rdv@caf.fr>"
    message["To"] = "Amina Hoarau <amina@example.org>"
    message["Subject"] = "Votre rendez-vous visio avec la Caf"
    if message_id:
        message["Message-ID"] = message_id
    message.set_content(body)
    return message


def _send(port: int, message: EmailMessage) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.send_message(message)


def _wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.05)


@pytest.fixture
def sink(tmp_path: Path):
    controller = start_sink(tmp_path / "mail")
    try:
        yield controller
    finally:
        controller.stop()


def _stored(controller) -> list[Path]:
    return sorted(controller.handler.mail_dir.glob("*.eml"))


def test_a_message_is_stored_under_its_message_id(sink) -> None:
    _send(sink.port, _message(body="Le lien du rendez-vous"))
    [path] = _stored(sink)
    assert path.name == "a1.r1.confirmation@visio-rdv.caf.fr.eml"
    stored = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert stored["Message-ID"] == "<a1.r1.confirmation@visio-rdv.caf.fr>"
    assert stored.get_content().strip() == "Le lien du rendez-vous"
    assert sink.handler.received == 1
    assert not list(sink.handler.mail_dir.glob(".tmp-*"))  # no temp file left behind


def test_the_same_message_id_twice_keeps_both(sink) -> None:
    _send(sink.port, _message(body="first"))
    _send(sink.port, _message(body="second"))
    _send(sink.port, _message(body="third"))
    paths = _stored(sink)
    assert [path.name for path in paths] == [
        "a1.r1.confirmation@visio-rdv.caf.fr.2.eml",
        "a1.r1.confirmation@visio-rdv.caf.fr.3.eml",
        "a1.r1.confirmation@visio-rdv.caf.fr.eml",
    ]
    bodies = {
        message_from_bytes(path.read_bytes(), policy=policy.default).get_content().strip()
        for path in paths
    }
    assert bodies == {"first", "second", "third"}


def test_without_a_message_id_a_uuid_names_the_file(sink) -> None:
    _send(sink.port, _message(message_id=None))
    [path] = _stored(sink)
    assert len(path.stem) == 36 and path.stem.count("-") == 4


def test_a_hostile_message_id_stays_inside_the_mail_dir(sink) -> None:
    _send(sink.port, _message(message_id="<../../etc/passwd@x>"))
    [path] = _stored(sink)
    assert path.parent == sink.handler.mail_dir
    assert "/" not in path.name and not path.name.startswith(".")


def test_safe_id() -> None:
    assert safe_id("<abc.r2.update@visio-rdv.caf.fr>") == "abc.r2.update@visio-rdv.caf.fr"
    assert safe_id(" <a b/c\\d@x> ") == "a_b_c_d@x"
    assert len(safe_id("<" + "x" * 500 + "@y>")) == 200
    assert len(safe_id(None)) == 36
    assert len(safe_id("<...>")) == 36


def test_fail_next_answers_451_then_accepts(sink) -> None:
    sink.handler.fail_next(1)
    with pytest.raises(smtplib.SMTPDataError) as caught:
        _send(sink.port, _message())
    assert caught.value.smtp_code == 451
    assert _stored(sink) == []
    _send(sink.port, _message())
    assert len(_stored(sink)) == 1
    assert sink.handler.deferred == 1


def test_a_share_of_temporary_failures(tmp_path: Path) -> None:
    controller = start_sink(tmp_path / "mail", temp_fail_share=1.0)
    try:
        with pytest.raises(smtplib.SMTPDataError) as caught:
            _send(controller.port, _message())
        assert caught.value.smtp_code == 451
    finally:
        controller.stop()
    assert list((tmp_path / "mail").glob("*.eml")) == []


APPOINTMENTS = (
    "3f2b1c9e-8d7a-4e6f-9b0c-1a2d3e4f5a6b",
    "b0c1d2e3-f4a5-4b6c-8d7e-9f0a1b2c3d4e",
    "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9",
)


def _fates(port: int, message_ids: list[str]) -> dict[str, list[str]]:
    """Send each message until the sink takes it: what each try met, per Message-ID."""
    fates: dict[str, list[str]] = {message_id: [] for message_id in message_ids}
    pending = list(message_ids)
    while pending:
        for message_id in list(pending):
            try:
                _send(port, _message(message_id))
            except smtplib.SMTPDataError as refused:
                fates[message_id].append(str(refused.smtp_code))
            except smtplib.SMTPServerDisconnected:
                fates[message_id].append("drop")
            else:
                fates[message_id].append("ok")
                pending.remove(message_id)
    return fates


def test_a_seed_replays_each_messages_faults_whatever_arrives_before_it(tmp_path: Path) -> None:
    message_ids = [f"<{a}.r1.confirmation@visio-rdv.caf.fr>" for a in APPOINTMENTS]
    message_ids += [f"<{APPOINTMENTS[0]}.r2.rescheduled@visio-rdv.caf.fr>"]
    runs = []
    for n, order in enumerate((message_ids, message_ids[::-1])):
        controller = start_sink(tmp_path / f"mail{n}", temp_fail_share=0.4, drop_share=0.2, seed=11)
        try:
            runs.append(_fates(controller.port, order))
        finally:
            controller.stop()

    assert runs[0] == runs[1]  # the same fates, though the messages came in the other order
    # And they are the published function of (seed, appointment, rest of the id, attempt).
    for message_id, fates in runs[0].items():
        appointment, operation = fault_subject(message_id)
        assert appointment in APPOINTMENTS
        expected = [
            pick(draw(11, appointment, operation, attempt), [(0.2, "drop"), (0.4, "451")]) or "ok"
            for attempt in range(1, len(fates) + 1)
        ]
        assert fates == expected
    assert {fate for fates in runs[0].values() for fate in fates} == {"ok", "451", "drop"}


def test_fault_subject_is_the_appointment_and_the_rest_of_the_message_id() -> None:
    appointment = APPOINTMENTS[0]
    assert fault_subject(f"<{appointment}.r2.reminder-60@visio-rdv.caf.fr>") == (
        appointment,
        ".r2.reminder-60@visio-rdv.caf.fr",
    )
    assert fault_subject(f"<alert.{appointment}.email_late@visio-rdv.caf.fr>") == (
        appointment,
        "alert..email_late@visio-rdv.caf.fr",
    )
    assert fault_subject("<other@x>") == ("", "other@x")
    assert fault_subject(None) == ("", "")


def test_messages_matching_a_pattern_are_deferred_every_time(tmp_path: Path) -> None:
    controller = start_sink(tmp_path / "mail", defer_matching=r"\.confirmation@")
    try:
        for _ in range(3):
            with pytest.raises(smtplib.SMTPDataError) as caught:
                _send(controller.port, _message())
            assert caught.value.smtp_code == 451
        _send(controller.port, _message("<alert.a1.email_late@visio-rdv.caf.fr>"))
    finally:
        controller.stop()
    assert [path.name for path in (tmp_path / "mail").glob("*.eml")] == [
        "alert.a1.email_late@visio-rdv.caf.fr.eml"
    ]
    assert controller.handler.deferred == 3


def test_refused_recipients_get_550(tmp_path: Path) -> None:
    controller = start_sink(tmp_path / "mail", refuse_recipients=["amina@example.org"])
    try:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as caught:
            _send(controller.port, _message())
        [(code, _)] = caught.value.recipients.values()
        assert code == 550
    finally:
        controller.stop()


def test_purge_removes_only_old_messages(tmp_path: Path) -> None:
    sink = MailSink(tmp_path / "mail")
    old = sink.store(bytes(_message(message_id="<old@x>")))
    new = sink.store(bytes(_message(message_id="<new@x>")))
    a_week_ago = time.time() - 8 * 86400
    os.utime(old, (a_week_ago, a_week_ago))
    assert sink.purge(7 * 86400) == 1
    assert not old.exists() and new.exists()


def test_the_console_script_runs_until_sigterm(tmp_path: Path) -> None:
    port = free_port()
    mail_dir = tmp_path / "mail"
    env = {
        **os.environ,
        "SMTP_SINK_PORT": str(port),
        "SMTP_SINK_MAIL_DIR": str(mail_dir),
        "SMTP_SINK_REFUSE_RECIPIENTS": '["nobody@example.org"]',
    }
    process = subprocess.Popen(
        [sys.executable, "-c", "from visio_fakes.smtp_sink import main; main()"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def listening() -> bool:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        _wait_until(listening)
        _send(port, _message())
        assert [path.name for path in mail_dir.glob("*.eml")] == [
            "a1.r1.confirmation@visio-rdv.caf.fr.eml"
        ]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_drop_next_cuts_the_line_and_loses_the_message(sink) -> None:
    sink.handler.drop_next(1)
    with pytest.raises(smtplib.SMTPServerDisconnected):
        _send(sink.port, _message())
    assert _stored(sink) == []
    assert sink.handler.dropped == 1
    _send(sink.port, _message())  # the next connection is answered
    assert len(_stored(sink)) == 1


def test_drop_after_storing_keeps_the_message_the_client_never_hears_of(sink) -> None:
    sink.handler.drop_next(1, after_storing=True)
    with pytest.raises(smtplib.SMTPServerDisconnected):
        _send(sink.port, _message())
    [path] = _stored(sink)
    assert path.name == "a1.r1.confirmation@visio-rdv.caf.fr.eml"


def test_starttls_and_login_are_required_when_configured(tmp_path: Path) -> None:
    ca = ensure_dev_ca(tmp_path / "ca")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(ca.server_cert, ca.server_key)
    controller = start_sink(
        tmp_path / "mail", tls_context=server_tls, credentials={"relay-user": "s3cret"}
    )
    try:
        with smtplib.SMTP("127.0.0.1", controller.port, timeout=10) as client:
            with pytest.raises(smtplib.SMTPSenderRefused):  # 530: STARTTLS first
                client.send_message(_message())
        with smtplib.SMTP("127.0.0.1", controller.port, timeout=10) as client:
            client.starttls(context=ssl.create_default_context(cafile=str(ca.ca_cert)))
            with pytest.raises(smtplib.SMTPAuthenticationError):
                client.login("relay-user", "wrong")
            client.login("relay-user", "s3cret")
            client.send_message(_message())
    finally:
        controller.stop()
    assert len(list((tmp_path / "mail").glob("*.eml"))) == 1


# --- Cheap and exact: DATA read in one piece, stored as received ------------------------------

_TRICKY = (
    b"From: a@example.org\r\n"
    b"To: b@example.org\r\n"
    b"Message-ID:\r\n <folded.r1.confirmation@visio-rdv.caf.fr>\r\n"
    b"\r\n"
    b".leading dot\r\n"
    b"..two dots\r\n"
    b".\r\n"  # a lone dot inside the message: the client sends it as '..'
    b"ends with a dot.\r\n"
    b"\r\n"
    b"=C3=A9 and a last line.\r\n"
)


def test_the_stored_bytes_are_the_sent_bytes_dots_and_all(sink) -> None:
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as client:
        client.sendmail("a@example.org", ["b@example.org"], _TRICKY)  # dot-stuffs
        client.sendmail("a@example.org", ["b@example.org"], b".\r\n")  # one lone dot
    stored = {path.name: path.read_bytes() for path in _stored(sink)}
    assert stored.pop("folded.r1.confirmation@visio-rdv.caf.fr.eml") == _TRICKY
    [lone_dot] = stored.values()
    assert lone_dot == b".\r\n"


def test_a_message_over_the_size_limit_gets_552_and_the_session_goes_on(tmp_path: Path) -> None:
    controller = start_sink(tmp_path / "mail", data_size_limit=2000)
    try:
        with smtplib.SMTP("127.0.0.1", controller.port, timeout=10) as client:
            client.ehlo()
            del client.esmtp_features["size"]  # not declared at MAIL: found at DATA
            with pytest.raises(smtplib.SMTPDataError) as caught:
                client.send_message(_message(body="x" * 60 + "\n" * 100 + "y" * 3000))
            assert caught.value.smtp_code == 552
            client.send_message(_message())  # same connection, next message
    finally:
        controller.stop()
    assert len(list((tmp_path / "mail").glob("*.eml"))) == 1


def test_connections_and_resets_are_counted(sink) -> None:
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as client:
        for number in range(3):
            client.send_message(_message(f"<a{number}.r1.confirmation@visio-rdv.caf.fr>"))
        client.rset()
    _send(sink.port, _message("<b.r1.confirmation@visio-rdv.caf.fr>"))
    assert (sink.handler.connections, sink.handler.received) == (2, 4)
    assert sink.handler.resets >= 1


def test_hang_up_all_cuts_the_open_connections(sink) -> None:
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as client:
        assert client.noop()[0] == 250
        _wait_until(lambda: len(sink.handler.open_sessions) == 1)
        assert sink.handler.hang_up_all() == 1
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()
    _wait_until(lambda: not sink.handler.open_sessions)


@pytest.mark.parametrize(
    "arg",
    [
        "<amina@example.org>",
        "<bounce+a1.r1=example.org@visio-rdv.caf.fr> SIZE=3128 BODY=8BITMIME",
        "<first.last@sub.example.org>",
        "<a@example.org>  \tX=1",
        "<a@example.org> (a comment) X=1",
        "<a@example.org>X",
        "<a@example.org>\r\n",
        "<ABCDEFGHIJ@example.org>",
        "<a..b@example.org>",
        "<>",
        '<"two words"@example.org>',
        "<user@[127.0.0.1]>",
        "amina@example.org",
        "<amina@example.org",
    ],
)
def test_an_address_is_read_as_aiosmtpds_parser_reads_it(tmp_path: Path, arg: str) -> None:
    """The sink reads a plain `<local@domain>` without aiosmtpd's parser (a fifth of its CPU per
    message); what it reads must be what that parser reads, limits included."""
    loop = asyncio.new_event_loop()
    try:
        for limit in (0, 5):
            server = SinkSMTP(MailSink(tmp_path), loop=loop)
            server.local_part_limit = limit  # RFC 5321's 64 when set; 0: none (aiosmtpd's)
            assert server._getaddr(arg) == SMTP._getaddr(server, arg)
    finally:
        loop.close()
