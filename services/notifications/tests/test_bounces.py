"""Bounces (issue 26, item 4), on real parts: PostgreSQL, the SMTP sink bouncing chosen
recipients later with a DSN as a relay writes one, and the Brevo emulator over HTTP. The DSN
the sink delivered to the bounce mailbox is read as the service reads the ones the relay posts
to it (`bounces.receive`; the HTTP way in is proven by tests/test_end_to_end.py)."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from visio_fakes.smtp_sink import delivery_status_notification, start_sink
from visio_notifications import bounces, sms_receipts
from visio_notifications.app import create_app
from visio_notifications.handlers import on_appointment_requested, on_meeting_event
from visio_notifications.poller import poll_once
from visio_notifications.settings import DEV_BOUNCE_TOKEN
from visio_shared import NotificationFailed

from .conftest import text_of, wait_for

DOMAIN = "bounces.caf.example"
UNKNOWN = "nobody.here@example.fr"


@pytest.fixture
def sink(tmp_path: Path) -> Any:
    """The project's sink, bouncing every message to UNKNOWN after accepting it."""
    controller = start_sink(
        tmp_path / "mail", bounce_later=[re.escape(UNKNOWN)], bounce_delay_s=0.05
    )
    try:
        yield controller
    finally:
        controller.stop()


@pytest.fixture
def bounce_deps(sms_deps: Any) -> Any:
    settings = sms_deps.settings.model_copy(update={"bounce_domain": DOMAIN})
    return replace(sms_deps, settings=settings)


async def _book(deps: Any, make: Any, *, email: str, mobile: str | None, opted: bool) -> Any:
    appointment = make.appointment()
    user = appointment.user.model_copy(
        update={"email": email, "mobile": mobile, "sms_opt_in": opted}
    )
    appointment = appointment.model_copy(update={"user": user})
    await on_appointment_requested(deps, appointment)
    await on_meeting_event(deps, make.meeting(appointment))
    return appointment


async def _delivered_dsn(sink: Any) -> Path:
    box = Path(sink.handler.mail_dir) / "bounces"
    await wait_for(lambda: any(box.glob("*.eml")), 10)
    [dsn] = list(box.glob("*.eml"))
    return dsn


async def test_a_bounced_confirmation_fails_the_dispatch_texts_the_person_and_tells_the_caf(
    bounce_deps: Any, make: Any, sink: Any, emulator: Any, publisher: Any
) -> None:
    deps = bounce_deps
    appointment = await _book(deps, make, email=UNKNOWN, mobile="+33612345678", opted=False)
    await poll_once(deps)
    assert emulator.state.messages == []  # not opted in, and the email went: no text yet

    dsn = (await _delivered_dsn(sink)).read_bytes()
    # The DSN went back to the email's own bounce address (VERP), which names its dispatch.
    to = re.findall(rb"^To: (.*)\r$", dsn, re.M)[0]  # the DSN's own, before the original's
    tag = await deps.pool.fetchval("SELECT bounce_tag FROM dispatches")
    assert to.decode() == f"bounce+{tag}@{DOMAIN}" and len(tag) == 16

    assert await bounces.receive(deps, dsn, None) == "failed"
    row = await deps.pool.fetchrow("SELECT kind, status, reason, detail, smtp_code FROM dispatches")
    assert (row["kind"], row["status"], row["reason"], row["smtp_code"]) == (
        "confirmation",
        "failed",
        "bounced",
        550,
    )
    assert row["detail"].startswith("bounced later (5.1.1): smtp; 550 5.1.1 <[adresse]>")
    failed = [e for e in publisher.events() if isinstance(e, NotificationFailed)]
    assert [(e.appointment_id, e.kind, e.reason) for e in failed] == [
        (appointment.appointment_id, "confirmation", "bounced")
    ]
    assert failed[0].correlation_id == appointment.correlation_id

    # The way in when email fails: the confirmation as a text, opted in or not.
    await poll_once(deps)
    [text] = emulator.state.messages
    assert text["content"].startswith("Caf : votre rendez-vous en visio est confirmé")
    assert (text["encoding"], text["smsCount"]) == ("GSM-7", 1)
    assert (
        await deps.pool.fetchval("SELECT fallback FROM sms_messages WHERE kind = 'confirmation'")
        is True
    )

    # The same DSN again (the relay retried): nothing more.
    assert await bounces.receive(deps, dsn, None) == "duplicate"
    await poll_once(deps)
    assert len([e for e in publisher.events() if isinstance(e, NotificationFailed)]) == 1
    assert len(emulator.state.messages) == 1


async def test_without_a_mobile_a_bounce_still_fails_the_dispatch(
    bounce_deps: Any, make: Any, sink: Any, emulator: Any, publisher: Any
) -> None:
    await _book(bounce_deps, make, email=UNKNOWN, mobile=None, opted=False)
    dsn = (await _delivered_dsn(sink)).read_bytes()
    assert await bounces.receive(bounce_deps, dsn, None) == "failed"
    await poll_once(bounce_deps)
    assert emulator.state.messages == []
    assert [e.reason for e in publisher.events() if isinstance(e, NotificationFailed)] == [
        "bounced"
    ]


async def test_dsns_that_fail_nothing_are_kept_with_why(
    bounce_deps: Any, make: Any, mailbox: Any, publisher: Any
) -> None:
    deps = bounce_deps
    appointment = await _book(deps, make, email="jeanne@example.fr", mobile=None, opted=False)
    [sent] = mailbox.messages(appointment.appointment_id)
    original = sent.as_bytes()
    tag = await deps.pool.fetchval("SELECT bounce_tag FROM dispatches")
    ours = f"bounce+{tag}@{DOMAIN}"

    delayed = delivery_status_notification(ours, ["jeanne@example.fr"], original).replace(
        b"Action: failed", b"Action: delayed"
    )
    assert await bounces.receive(deps, delayed, ours) == "delayed"
    strangers = delivery_status_notification(f"bounce+{'a' * 16}@{DOMAIN}", ["x@y.fr"], b"")
    assert await bounces.receive(deps, strangers, None) == "unknown_dispatch"
    assert await bounces.receive(deps, b"Subject: hello\r\n\r\nnot a report", None) == "unreadable"
    # No bounce address, but the returned headers carry the Message-ID: found all the same.
    no_verp = delivery_status_notification("visio-rdv@caf.fr", ["jeanne@example.fr"], original)
    assert await bounces.receive(deps, no_verp, None) == "failed"

    rows = await deps.pool.fetch("SELECT outcome, why, raw IS NOT NULL AS kept FROM bounces")
    assert [(r["outcome"], r["kept"]) for r in rows] == [
        ("delayed", False),
        ("unknown_dispatch", True),
        ("unreadable", True),
        ("failed", False),
    ]
    assert rows[2]["why"] == "not a delivery report (text/plain)"
    assert len([e for e in publisher.events() if isinstance(e, NotificationFailed)]) == 1


async def test_the_next_email_says_the_number_failed(
    bounce_deps: Any, make: Any, clock: Any, mailbox: Any, emulator: Any
) -> None:
    """A text that can never arrive: the person's next email (here the 48-hour reminder) asks
    them to check their number; an email before it did not."""
    deps = bounce_deps
    appointment = await _book(
        deps, make, email="jeanne@example.fr", mobile="+33612345678", opted=True
    )
    await poll_once(deps)
    [text] = emulator.state.messages
    now = clock()
    assert await sms_receipts.on_receipt(
        deps.pool, str(text["messageId"]), "hard_bounce", "", now, deps.sms_metrics
    )
    clock.set(appointment.start - timedelta(hours=48))
    await poll_once(deps)
    confirmation = text_of(mailbox.one(appointment.appointment_id, "confirmation"))
    reminder = text_of(mailbox.one(appointment.appointment_id, "reminder-2880"))
    notice = "Nous n'avons pas pu vous envoyer de SMS au numéro se terminant par 78"
    assert notice not in confirmation
    assert notice in reminder
    assert "Vérifiez-le, ou donnez-en un autre, dans « Mon rendez-vous »." in reminder


async def test_only_the_relay_told_the_token_may_post_dsns(settings: Any) -> None:
    """The address the relay posts to is a secret: any other path is not found, and nothing
    is read (no database is even reached here)."""
    app = create_app(
        settings.model_copy(
            update={"database_url": "postgresql://nobody@127.0.0.1:1/none", "smtp_port": 1}
        )
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://notifications") as client:
        forged = await client.post("/v1/bounces/guessed", content=b"From: x\r\n\r\nforged")
        huge = await client.post(
            f"/v1/bounces/{DEV_BOUNCE_TOKEN}", content=b"x" * (3 * 1024 * 1024)
        )
    assert forged.status_code == 404
    assert huge.status_code == 413
