"""The mailer keeps its SMTP connections (issue 20), against the real SMTP sink, which counts
the connections it was opened and the RSETs it was sent: many messages over one connection, a
new one when the relay hung up (found before or at the next message), RSET after a 451, QUIT
after the idle timeout or the message cap, and the ambiguous cut line still a `Transient` whose
resend carries the same Message-ID."""

from __future__ import annotations

import asyncio

import pytest
from visio_notifications.mailer import SmtpMailer
from visio_runtime.errors import Transient
from visio_runtime.metrics import Metrics


async def test_many_messages_go_over_one_connection(smtp_settings, sink, mails, mailbox) -> None:
    metrics = Metrics("notifications")
    mailer = SmtpMailer(smtp_settings, metrics)
    for mail in mails(20):
        await mailer.send(mail)
    assert sink.handler.connections == 1
    assert len(mailbox.messages()) == 20
    assert metrics.value("smtp_connections_opened_total") == 1
    await mailer.close()
    await asyncio.to_thread(_wait_closed, sink)


async def test_messages_at_once_share_at_most_the_configured_connections(
    smtp_settings, sink, mails, mailbox
) -> None:
    mailer = SmtpMailer(smtp_settings.model_copy(update={"smtp_max_connections": 3}))
    await asyncio.gather(*(mailer.send(mail) for mail in mails(30)))
    assert sink.handler.connections <= 3
    assert len(mailbox.messages()) == 30
    await mailer.close()


async def test_a_connection_the_relay_dropped_while_idle_is_replaced_at_once(
    smtp_settings, sink, mails, mailbox
) -> None:
    """Found out at the next MAIL (before any of the message went out): sent on a new
    connection within the same call, not deferred."""
    metrics = Metrics("notifications")
    mailer = SmtpMailer(smtp_settings, metrics)
    first, second, third = mails(3)
    await mailer.send(first)
    sink.handler.hang_up_at_next_mail(1)
    await mailer.send(second)
    assert _ids(mailbox) == {first.message_id, second.message_id}
    # Or noticed before (the relay's hang-up already seen): a new connection too.
    assert await asyncio.to_thread(sink.handler.hang_up_all) == 1
    await asyncio.to_thread(_wait_closed, sink)
    await mailer.send(third)
    assert sink.handler.connections == 3
    assert _ids(mailbox) == {mail.message_id for mail in (first, second, third)}
    assert len(mailbox.messages()) == 3
    assert metrics.value("smtp_sends_total", outcome="deferred") == 0
    assert metrics.value("smtp_sends_total", outcome="sent") == 3


async def test_after_a_451_the_envelope_is_reset_and_the_connection_serves_again(
    smtp_settings, sink, mails, mailbox
) -> None:
    mailer = SmtpMailer(smtp_settings)
    deferred, sent = mails(2)
    sink.handler.fail_next(1)
    with pytest.raises(Transient, match="451"):
        await mailer.send(deferred)
    assert sink.handler.resets == 1
    await mailer.send(sent)
    # Checked step by step: two files written in one tick of the file system's clock have
    # the same mtime, so the mailbox's order cannot tell which came first.
    assert _ids(mailbox) == {sent.message_id}
    await mailer.send(deferred)  # the later try, same Message-ID
    assert sink.handler.connections == 1
    assert _ids(mailbox) == {sent.message_id, deferred.message_id}
    assert len(mailbox.messages()) == 2


async def test_a_line_cut_after_the_data_stays_ambiguous_and_the_resend_is_the_same_message(
    smtp_settings, sink, mails, mailbox
) -> None:
    """The relay may have kept it (here it did): the caller tries again later, the mailbox gets
    the same Message-ID twice and shows one email. The pool does not retry this itself."""
    mailer = SmtpMailer(smtp_settings)
    [mail] = mails(1)
    sink.handler.drop_next(1, after_storing=True)
    with pytest.raises(Transient):
        await mailer.send(mail)
    assert len(mailbox.messages()) == 1  # taken, though the client never heard so
    await mailer.send(mail)
    assert [m["Message-ID"] for m in mailbox.messages()] == [mail.message_id] * 2
    assert sink.handler.connections == 2  # the cut connection was not reused


async def test_idle_connections_are_closed_and_capped_ones_replaced(
    smtp_settings, sink, mails, mailbox
) -> None:
    settings = smtp_settings.model_copy(
        update={"smtp_idle_timeout_s": 0.2, "smtp_messages_per_connection": 3}
    )
    mailer = SmtpMailer(settings)
    batch = mails(8)
    for mail in batch[:7]:
        await mailer.send(mail)
    assert sink.handler.connections == 3  # 3 + 3 + 1
    await asyncio.to_thread(_wait_closed, sink)  # QUIT after 0.2 s unused
    await mailer.send(batch[7])
    assert sink.handler.connections == 4
    assert len(mailbox.messages()) == 8
    await mailer.close()
    await asyncio.to_thread(_wait_closed, sink)


def _wait_closed(sink, within_s: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + within_s
    while sink.handler.open_sessions:
        if time.monotonic() > deadline:
            raise AssertionError("the connection is still open")
        time.sleep(0.02)


def _ids(mailbox) -> set[str]:
    return {m["Message-ID"] for m in mailbox.messages()}
