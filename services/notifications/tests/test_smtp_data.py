"""DATA as the mailer sends it (`smtp_data`): the bytes on the wire are those aiosmtplib's own
`SMTP.data` would write, for any message, and the real SMTP sink receives a message whose lines
start with dots — or hold a dot alone, which would end the message early — exactly as it was
written; the relay's refusal after the message is still an answer the mailer classifies."""

from __future__ import annotations

import pytest
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from visio_notifications.mailer import SmtpMailer
from visio_notifications.mime import Mail
from visio_notifications.smtp_data import wire_data
from visio_runtime.errors import Transient


def aiosmtplibs(message: bytes) -> bytes:
    """What `SMTPProtocol.execute_data_command` writes after DATA's 354."""
    return PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message)) + b".\r\n"


_PIECES = st.one_of(
    st.binary(max_size=12),
    st.sampled_from([b"\r\n", b"\n", b"\r", b".", b"..", b"\r\n.", b"\n.", b"\r.", b"a", b"="]),
)


@hypothesis_settings(max_examples=2000, deadline=None)
@given(message=st.lists(_PIECES, max_size=40).map(b"".join))
def test_the_wire_bytes_are_aiosmtplibs_for_any_message(message: bytes) -> None:
    assert wire_data(message) == aiosmtplibs(message)


def test_an_email_as_composed_is_the_same_on_the_wire(mails) -> None:  # type: ignore[no-untyped-def]
    for mail in mails(3):
        assert wire_data(mail.raw) == aiosmtplibs(mail.raw)


DOTTED = (
    b"From: a@example.fr\r\nTo: b@example.fr\r\nMessage-ID: <dots.r1.confirmation@x.fr>\r\n"
    b"Subject: dots\r\n\r\n.first line, a dot\r\n.\r\n..two\r\nlast\r\n"
)


async def test_the_sink_receives_lines_of_dots_as_they_were_written(
    smtp_settings, sink, mailbox
) -> None:
    mailer = SmtpMailer(smtp_settings)
    await mailer.send(
        Mail("<dots.r1.confirmation@x.fr>", "a@example.fr", ("b@example.fr",), DOTTED, False)
    )
    [stored] = sink.handler.mail_dir.glob("*.eml")
    assert stored.read_bytes().endswith(DOTTED)  # after the headers the sink adds
    await mailer.close()


async def test_a_refusal_after_the_message_is_classified_and_a_dropped_line_is_ambiguous(
    smtp_settings, sink, mailbox, mails
) -> None:
    mailer = SmtpMailer(smtp_settings)
    first, second = mails(2)
    sink.handler.fail_next(1)  # 451 after the message
    with pytest.raises(Transient, match="451"):
        await mailer.send(first)
    sink.handler.drop_next(1, after_storing=True)
    with pytest.raises(Transient):
        await mailer.send(second)
    assert len(mailbox.messages()) == 1
