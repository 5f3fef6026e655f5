"""« Recevoir à nouveau le lien » on real parts — PostgreSQL with the service's migrations and
role, the SMTP sink through the real mailer — with Kafka faked: one email per request, however
often the request is delivered; for the email again, none for an appointment cancelled, unknown
or over, with the reason recorded; for a fresh link after the appointment (over or cancelled),
« Mes consentements » alone, signed from the request on."""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from datetime import timedelta

import asyncpg
import pytest
from visio_notifications import dispatches, store
from visio_notifications.handlers import (
    on_appointment_changed,
    on_appointment_requested,
    on_link_requested,
    on_meeting_event,
)
from visio_notifications.poller import poll_once
from visio_shared import NotificationSent
from visio_shared.links import ExpiredLink, LinkPurpose, read_link


async def _booked(deps, make, **fields):
    appointment = make.appointment(**fields)
    meeting = make.meeting(appointment)
    await on_appointment_requested(deps, appointment)
    await on_meeting_event(deps, meeting)
    return appointment, meeting


def _resent(mailbox, appointment) -> list:
    return [
        m
        for m in mailbox.messages(appointment.appointment_id)
        if ".link_resent-" in m["Message-ID"]
    ]


async def _outcome(deps, request) -> str | None:
    outcome: str | None = await deps.pool.fetchval(
        "SELECT outcome FROM link_requests WHERE event_id = $1", request.event_id
    )
    return outcome


async def test_one_email_per_request_however_often_it_is_delivered(
    deps, make, mailbox, publisher, parts, link_keys, clock
) -> None:
    appointment, meeting = await _booked(deps, make)
    first = make.link_requested(appointment)
    await on_link_requested(deps, first)
    await on_link_requested(deps, first)  # redelivered, as after a rebalance

    [message] = _resent(mailbox, appointment)
    assert message["Subject"].startswith("Le lien de votre rendez-vous visio avec la Caf le ")
    assert str(first.event_id.hex) in message["Message-ID"]
    text = parts.text(message)
    assert meeting.join_url in text
    manage = re.search(r"https://rdv\.caf\.example/booking/mon-rendez-vous/(\S+)", text)
    assert manage is not None
    claims = read_link(link_keys, manage.group(1), LinkPurpose.MANAGE, now=clock.now)
    assert (claims.appointment_id, claims.revision) == (appointment.appointment_id, 1)

    clock.advance(hours=3)  # asked again, hours later: a new event, a new email
    second = make.link_requested(appointment, reason="fresh_link")
    await on_link_requested(deps, second)
    await on_link_requested(deps, second)

    assert mailbox.keys(appointment.appointment_id) == [
        "r1.confirmation",
        f"r1.link_resent-{first.event_id.hex}",
        f"r1.link_resent-{second.event_id.hex}",
    ]
    events = publisher.events(appointment.appointment_id)
    assert [(e.event_type, e.kind) for e in events] == [
        ("NotificationSent", "confirmation"),
        ("NotificationSent", "link_resent"),
        ("NotificationSent", "link_resent"),
    ]
    assert [e.causation_id for e in events[1:]] == [first.event_id, second.event_id]
    assert all(isinstance(e, NotificationSent) for e in events)
    assert [await _outcome(deps, r) for r in (first, second)] == ["sent", "sent"]
    rows = await deps.pool.fetch(
        "SELECT request_id FROM dispatches WHERE kind = 'link_resent' AND appointment_id = $1 "
        "ORDER BY id",
        appointment.appointment_id,
    )
    assert [row["request_id"] for row in rows] == [first.event_id, second.event_id]


async def test_the_dispatch_log_keys_link_resent_by_its_request(deps, make) -> None:
    appointment, _ = await _booked(deps, make)
    await on_link_requested(deps, make.link_requested(appointment))
    [row] = await deps.pool.fetch("SELECT * FROM dispatches WHERE kind = 'link_resent'")
    async with deps.pool.acquire() as conn:
        state = await store.load_state(conn, appointment.appointment_id)
    [told] = [t for t in state.history if t.request_id]
    dispatch = dispatches.Dispatch(
        appointment.appointment_id, row["message_id"], told, make.link_requested(appointment)
    )
    async with deps.pool.acquire() as conn:
        with pytest.raises(asyncpg.UniqueViolationError):  # the same request: refused
            await dispatches.record(conn, dispatch)
        with pytest.raises(asyncpg.CheckViolationError):  # a link_resent answers a request
            await dispatches.record(conn, replace(dispatch, told=replace(told, request_id=None)))
        other = make.link_requested(appointment)
        await dispatches.record(
            conn, replace(dispatch, told=replace(told, request_id=other.event_id))
        )
    count = await deps.pool.fetchval("SELECT count(*) FROM dispatches WHERE kind = 'link_resent'")
    assert count == 2  # same appointment, kind and revision: another request, another row


async def test_a_cancelled_appointment_gets_nothing_and_the_reason_is_kept(
    deps, make, mailbox, publisher, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="visio_notifications.handlers")
    appointment, _ = await _booked(deps, make, first_name="Amina", email="amina.hoarau@example.org")
    await on_appointment_changed(deps, make.cancelled(appointment, 2))
    request = make.link_requested(appointment, revision=2)
    await on_link_requested(deps, request)

    assert mailbox.keys(appointment.appointment_id) == ["r1.confirmation", "r2.cancellation"]
    assert [e.kind for e in publisher.events(appointment.appointment_id)] == [
        "confirmation",
        "cancellation",
    ]
    assert await _outcome(deps, request) == "appointment_cancelled"
    [said] = [r.getMessage() for r in caplog.records if str(request.event_id) in r.getMessage()]
    assert "appointment_cancelled" in said
    assert "amina" not in said.lower() and "example.org" not in said


async def test_an_unknown_appointment_gets_nothing_and_the_reason_is_kept(
    deps, make, mailbox, publisher
) -> None:
    appointment = make.appointment()  # never booked here (or forgotten since)
    request = make.link_requested(appointment)
    await on_link_requested(deps, request)
    assert mailbox.messages() == [] and publisher.events() == []
    assert await _outcome(deps, request) == "appointment_unknown"
    processed = await deps.pool.fetchval(
        "SELECT count(*) FROM processed_events WHERE event_id = $1", request.event_id
    )
    assert processed == 1  # handled for good, not retried


async def test_the_email_again_for_an_appointment_over_is_not_sent_and_why_is_kept(
    deps, make, mailbox, publisher, clock
) -> None:
    appointment, _ = await _booked(deps, make)
    clock.set(appointment.start + timedelta(hours=2))
    request = make.link_requested(appointment)
    await on_link_requested(deps, request)
    assert mailbox.keys(appointment.appointment_id) == ["r1.confirmation"]
    assert len(publisher.events(appointment.appointment_id)) == 1  # no failure to alert on
    assert await _outcome(deps, request) == "appointment_over"


async def test_before_the_meeting_is_ready_the_email_says_the_link_will_follow(
    deps, make, mailbox, parts
) -> None:
    appointment = make.appointment()
    await on_appointment_requested(deps, appointment)
    await on_link_requested(deps, make.link_requested(appointment))

    [message] = _resent(mailbox, appointment)
    text = parts.text(message)
    assert "Le lien pour rejoindre le rendez-vous n'est pas encore prêt." in text
    assert "teams.microsoft.com" not in text
    assert "GÉRER MON RENDEZ-VOUS" in text
    # The meeting comes: the confirmation follows, with the link.
    await on_meeting_event(deps, make.meeting(appointment))
    assert mailbox.keys(appointment.appointment_id)[-1] == "r1.confirmation"


async def test_after_a_failed_meeting_the_email_says_the_caf_will_call(
    deps, make, mailbox, parts
) -> None:
    appointment = make.appointment()
    await on_appointment_requested(deps, appointment)
    await on_meeting_event(deps, make.meeting_failed(appointment))
    await on_link_requested(deps, make.link_requested(appointment))

    [message] = _resent(mailbox, appointment)
    text = parts.text(message)
    assert "La Caf de Paris vous contactera pour convenir de la suite." in text
    assert "pas encore prêt" not in text and "GUIDE D'ACCÈS" not in text


async def test_a_request_the_relay_could_not_take_is_sent_once_later(
    deps, make, sink, mailbox, publisher, clock
) -> None:
    appointment, _ = await _booked(deps, make)
    sink.handler.fail_next(1)
    request = make.link_requested(appointment)
    await on_link_requested(deps, request)  # no exception: the poller tries again
    assert _resent(mailbox, appointment) == []
    assert await _outcome(deps, request) is None

    clock.advance(seconds=deps.settings.mail_retry_initial_s)
    await poll_once(deps)
    await poll_once(deps)
    assert len(_resent(mailbox, appointment)) == 1
    assert await _outcome(deps, request) == "sent"
    assert [e.kind for e in publisher.events(appointment.appointment_id)][-1] == "link_resent"


async def test_a_request_still_pending_when_the_appointment_is_cancelled_is_dropped(
    deps, make, sink, mailbox, clock
) -> None:
    appointment, _ = await _booked(deps, make)
    sink.handler.fail_next(1)
    request = make.link_requested(appointment)
    await on_link_requested(deps, request)
    clock.advance(seconds=deps.settings.mail_retry_initial_s)
    await on_appointment_changed(deps, make.cancelled(appointment, 2))

    assert mailbox.keys(appointment.appointment_id) == ["r1.confirmation", "r2.cancellation"]
    assert await _outcome(deps, request) == "appointment_cancelled"
    await poll_once(deps)
    assert _resent(mailbox, appointment) == []


_PAGE = re.compile(r"https://(?:rdv|consentement)\.caf\.example/\S+")


async def test_a_fresh_link_after_the_appointment_sends_the_consents_link_alone(
    deps, make, mailbox, publisher, parts, link_keys, clock
) -> None:
    appointment, meeting = await _booked(deps, make)
    # Six weeks on: the links of every email expired with the appointment's end + 30 days.
    clock.set(appointment.start + timedelta(days=42))
    request = make.link_requested(appointment, reason="fresh_link", at=clock.now)
    await on_link_requested(deps, request)
    await on_link_requested(deps, request)  # redelivered: still one email

    [message] = _resent(mailbox, appointment)
    assert message["Subject"].startswith("Vos consentements pour votre rendez-vous visio")
    text, body = parts.text(message), parts.html(message)
    assert "Votre rendez-vous visio avec la Caf du jeudi 3 décembre 2026 à 10 h 00" in text
    assert "est passé." in text
    [url] = [u for u in _PAGE.findall(text) if "/cgu/" not in u]  # and the CGU accepted
    assert url.startswith("https://consentement.caf.example/mes-consentements/")
    token = url.rsplit("/", 1)[1]
    claims = read_link(link_keys, token, LinkPurpose.CONSENTS, now=clock.now)
    assert (claims.appointment_id, claims.revision) == (appointment.appointment_id, 1)
    assert claims.expires_at == request.occurred_at.replace(microsecond=0) + timedelta(days=30)
    with pytest.raises(ExpiredLink):
        read_link(link_keys, token, LinkPurpose.CONSENTS, now=clock.now + timedelta(days=31))
    for part in (text, body):
        assert meeting.join_url not in part and "teams.microsoft.com" not in part
        assert "/mon-rendez-vous/" not in part and "/enregistrement/" not in part

    assert await _outcome(deps, request) == "sent"
    [row] = await deps.pool.fetch(
        "SELECT join_url, status FROM dispatches WHERE request_id = $1", request.event_id
    )
    assert (row["join_url"], row["status"]) == (None, "sent")  # the log: no join link told
    events = publisher.events(appointment.appointment_id)
    assert [(e.event_type, e.kind) for e in events] == [
        ("NotificationSent", "confirmation"),
        ("NotificationSent", "link_resent"),
    ]
    assert events[-1].causation_id == request.event_id


async def test_a_fresh_link_for_a_cancelled_appointment_sends_the_consents_link_alone(
    deps, make, mailbox, parts, link_keys, clock
) -> None:
    appointment, _ = await _booked(deps, make)
    await on_appointment_changed(deps, make.cancelled(appointment, 2))
    clock.advance(days=1)  # before the appointment's time: cancelled is over all the same
    resend = make.link_requested(appointment, revision=2, at=clock.now)
    fresh = make.link_requested(appointment, revision=2, reason="fresh_link", at=clock.now)
    await on_link_requested(deps, resend)
    await on_link_requested(deps, fresh)

    assert mailbox.keys(appointment.appointment_id) == [
        "r1.confirmation",
        "r2.cancellation",
        f"r2.link_resent-{fresh.event_id.hex}",
    ]
    text = parts.text(_resent(mailbox, appointment)[0])
    assert "a été annulé." in text and "teams.microsoft.com" not in text
    [url] = [u for u in _PAGE.findall(text) if "/cgu/" not in u]  # and the CGU accepted
    claims = read_link(link_keys, url.rsplit("/", 1)[1], LinkPurpose.CONSENTS, now=clock.now)
    assert claims.revision == 2  # the cancellation's, which consent knows
    assert [await _outcome(deps, r) for r in (resend, fresh)] == ["appointment_cancelled", "sent"]


async def test_without_link_keys_a_fresh_link_after_the_appointment_fails_loudly(
    deps, make, mailbox, publisher, clock
) -> None:
    appointment, _ = await _booked(deps, make)
    deps = replace(deps, settings=deps.settings.model_copy(update={"link_keys": None}))
    clock.set(appointment.start + timedelta(days=2))
    request = make.link_requested(appointment, reason="fresh_link", at=clock.now)
    await on_link_requested(deps, request)

    assert _resent(mailbox, appointment) == []  # an email with nothing in it helps nobody
    assert await _outcome(deps, request) == "failed"
    failed = publisher.events(appointment.appointment_id)[-1]
    assert (failed.event_type, failed.kind, failed.reason) == (
        "NotificationFailed",
        "link_resent",
        "no_link_keys",
    )
