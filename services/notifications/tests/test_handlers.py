"""The handlers on real parts — PostgreSQL with the service's own migrations and role, the
project's SMTP sink through the real mailer — with Kafka faked: what each event leads to in
the mailbox, in the dispatch log and on the notifications topic."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from asyncpg.connection import LoggedQuery
from visio_notifications import store
from visio_notifications.handlers import (
    on_appointment_changed,
    on_appointment_requested,
    on_events,
    on_meeting_event,
    settle,
)
from visio_notifications.poller import poll_once
from visio_runtime.errors import Transient
from visio_shared import Headers, NotificationFailed, NotificationSent

NEW_JOIN_URL = "https://teams.microsoft.com/meet/2647813459?p=NewAdvisorLink"


async def _book(deps, appointment, meeting, *, meeting_first: bool = False) -> None:
    if meeting_first:
        await on_meeting_event(deps, meeting)
        await on_appointment_requested(deps, appointment)
    else:
        await on_appointment_requested(deps, appointment)
        await on_meeting_event(deps, meeting)


async def _dispatches(deps, appointment_id) -> list[asyncpg.Record]:
    return await deps.pool.fetch(
        "SELECT * FROM dispatches WHERE appointment_id = $1 ORDER BY id", appointment_id
    )


async def test_an_appointments_state_is_read_in_one_statement(deps, make) -> None:
    """What is known of an appointment — its copy, its meeting, the dispatch log, the pending
    requests for the email again, a failed text — in one round trip (it was four; settling an
    email reads it twice)."""
    appointment = make.appointment()
    meeting = make.meeting(appointment)
    await _book(deps, appointment, meeting)
    statements: list[str] = []

    def count(record: LoggedQuery) -> None:
        statements.append(record.query)

    async with deps.pool.acquire() as conn:
        conn.add_query_logger(count)
        state = await store.load_state(conn, appointment.appointment_id)
        conn.remove_query_logger(count)

    assert len(statements) == 1
    assert state.appointment is not None and state.link is not None
    assert state.appointment.appointment_id == appointment.appointment_id
    assert state.link.event_id == meeting.event_id
    [told] = state.history
    assert (told.kind, told.revision, told.status) == ("confirmation", 1, "sent")
    assert told.start_at == appointment.start and told.join_url == state.link.join_url
    assert state.link_requests == () and state.number_failed is False


async def test_settling_a_confirmation_reads_the_state_once_and_then_knows_it(
    deps, make, mailbox
) -> None:
    """A batch's meetings are kept in one statement, and settling reads the appointment's
    state once: what its email changes there (the log, the request it answers) is applied in
    memory — the very state a second read gives, so the reminders are lined up as before."""
    appointments = [make.appointment() for _ in range(3)]
    meetings = [make.meeting(appointment) for appointment in appointments]
    await on_events(deps, appointments)
    statements: list[str] = []

    def note(record: LoggedQuery) -> None:
        statements.append(record.query)

    async with deps.pool.acquire() as conn:
        async with conn.transaction():
            conn.add_query_logger(note)
            await store.save_meetings(conn, meetings)
            conn.remove_query_logger(note)
        assert len(statements) == 1
        [appointment, *_] = appointments
        statements.clear()
        async with conn.transaction():
            await store.request_settlements(
                conn, [(appointment.appointment_id, meetings[0].event_id)], deps.clock()
            )
            conn.add_query_logger(note)
            await settle(deps, conn, appointment.appointment_id)
            conn.remove_query_logger(note)
        state = await store.load_state(conn, appointment.appointment_id)

    assert mailbox.keys(appointment.appointment_id) == ["r1.confirmation"]
    reads = [q for q in statements if "FROM dispatches d WHERE d.appointment_id" in q]
    assert len(reads) == 1  # it was three: the state twice, the cause once
    [told] = state.history
    assert (told.kind, told.status) == ("confirmation", "sent")
    assert state.cause == appointment.event_id  # settled: the latest appointment event again
    caused = await deps.pool.fetchval(
        "SELECT event->>'causation_id' FROM dispatches WHERE appointment_id = $1",
        appointment.appointment_id,
    )
    assert caused == str(meetings[0].event_id)  # the event that asked for settling
    # What settling knew after the email is what the log now says: with the email applied to
    # the state before it, the state read back.
    before = dataclasses.replace(state, history=())
    assert before.with_email(told) == state
    assert await deps.pool.fetchval(
        "SELECT count(*) FROM reminders WHERE appointment_id = $1", appointment.appointment_id
    ) == len(deps.settings.reminder_offsets_minutes)


@pytest.mark.parametrize("meeting_first", [True, False])
async def test_either_half_first_one_confirmation(
    deps, make, mailbox, publisher, parts, meeting_first
) -> None:
    appointment = make.appointment()
    meeting = make.meeting(appointment)
    first, second = (meeting, appointment) if meeting_first else (appointment, meeting)

    await (on_meeting_event if meeting_first else on_appointment_requested)(deps, first)
    assert mailbox.messages() == [] and publisher.events() == []
    await (on_appointment_requested if meeting_first else on_meeting_event)(deps, second)

    message = mailbox.one(appointment.appointment_id, "confirmation")
    assert meeting.join_url in parts.text(message)
    [sent] = publisher.events(appointment.appointment_id)
    assert isinstance(sent, NotificationSent)
    assert (sent.kind, sent.revision, sent.message_id) == ("confirmation", 1, message["Message-ID"])
    assert sent.correlation_id == appointment.correlation_id
    assert sent.causation_id == second.event_id  # the event that completed the pair
    [record] = publisher.published
    assert record["topic"] == deps.topics.notifications
    assert record["key"] == str(appointment.appointment_id).encode()
    assert record["headers"][Headers.EVENT_TYPE] == "NotificationSent"
    [row] = await _dispatches(deps, appointment.appointment_id)
    assert (row["status"], row["kind"], row["published_at"] is not None) == (
        "sent",
        "confirmation",
        True,
    )
    assert "@" not in row["recipient_sha256"]


async def test_a_hostile_name_arrives_escaped_with_its_headers_intact(
    deps, make, mailbox, parts
) -> None:
    appointment = make.appointment(
        first_name="<img src=x onerror=alert(1)>\r\nBcc: victim@evil.example",
        last_name='O\'Brien "<script>"',
        advisor_name="<b>Claire</b>",
    )
    await _book(deps, appointment, make.meeting(appointment))

    [message] = mailbox.messages(appointment.appointment_id)
    assert message["Bcc"] is None
    assert [a.addr_spec for a in message["To"].addresses] == ["amina.hoarau@example.org"]
    body = parts.html(message)
    assert "<img" not in body and "<script>" not in body and "<b>Claire</b>" not in body
    assert "&lt;img src=x onerror=alert(1)&gt;" in body
    assert "&lt;b&gt;Claire&lt;/b&gt;" in body
    attendee = parts.calendar(message).walk("VEVENT")[0]["ATTENDEE"]
    assert str(attendee) == "mailto:amina.hoarau@example.org"


async def test_book_reschedule_cancel_one_uid_sequence_follows_revision(
    deps, make, mailbox, publisher, parts
) -> None:
    appointment = make.appointment()
    meeting = make.meeting(appointment)
    await _book(deps, appointment, meeting)
    new_start = appointment.start + timedelta(days=2, hours=4)
    await on_appointment_changed(deps, make.rescheduled(appointment, 2, new_start))
    await on_appointment_changed(deps, make.cancelled(appointment, 3, reason="advisor"))

    assert mailbox.keys(appointment.appointment_id) == [
        "r1.confirmation",
        "r2.rescheduled",
        "r3.cancellation",
    ]
    calendars = [parts.calendar(m) for m in mailbox.messages(appointment.appointment_id)]
    events = [calendar.walk("VEVENT")[0] for calendar in calendars]
    assert {str(event["UID"]) for event in events} == {
        f"{appointment.appointment_id}@visio-rdv.caf.fr"
    }
    assert [event["SEQUENCE"] for event in events] == [1, 2, 3]
    assert [str(calendar["METHOD"]) for calendar in calendars] == ["REQUEST", "REQUEST", "CANCEL"]
    assert [str(event["STATUS"]) for event in events] == ["CONFIRMED", "CONFIRMED", "CANCELLED"]
    assert events[1].decoded("DTSTART") == new_start

    rescheduled = parts.text(mailbox.one(appointment.appointment_id, "rescheduled"))
    assert "Avant : jeudi 3 décembre 2026 à 10 h 00" in rescheduled
    assert "Désormais : samedi 5 décembre 2026 à 14 h 00 (heure de Paris)" in rescheduled
    assert meeting.join_url in rescheduled  # the same link
    cancellation = parts.text(mailbox.one(appointment.appointment_id, "cancellation"))
    assert "Votre conseiller Caf ne peut pas assurer votre rendez-vous" in cancellation
    assert "samedi 5 décembre 2026 à 14 h 00" in cancellation
    assert [(e.kind, e.revision) for e in publisher.events(appointment.appointment_id)] == [
        ("confirmation", 1),
        ("rescheduled", 2),
        ("cancellation", 3),
    ]


async def test_a_corrected_address_gets_the_confirmation_again_alone(
    deps, make, mailbox, parts
) -> None:
    appointment = make.appointment(device="computer")
    await _book(deps, appointment, make.meeting(appointment))
    corrected = make.contact_corrected(appointment, 2, "amina.h@example.net", device="smartphone")
    await on_appointment_changed(deps, corrected)

    message = mailbox.one(appointment.appointment_id, "contact_corrected")
    assert [a.addr_spec for a in message["To"].addresses] == ["amina.h@example.net"]
    text = parts.text(message)
    assert text.startswith("Bonjour Amina,\n\nVos coordonnées ont été corrigées.")
    assert text.index("Votre smartphone ou une tablette") < text.index("Un ordinateur")
    assert parts.calendar(message).walk("VEVENT")[0]["SEQUENCE"] == 2
    # The first address got the confirmation only, nothing of the correction.
    [first] = [m for m in mailbox.messages() if "amina.hoarau@example.org" in str(m["To"])]
    assert ".r1.confirmation@" in first["Message-ID"]


@pytest.mark.parametrize("meeting_first", [True, False])
async def test_a_new_advisor_means_a_new_link_said_to_replace_the_old(
    deps, make, mailbox, parts, meeting_first
) -> None:
    appointment = make.appointment()
    old = make.meeting(appointment)
    await _book(deps, appointment, old)
    reassigned = make.reassigned(appointment, 2, name="Karim Benali")
    new = make.meeting(
        appointment,
        revision=2,
        join_url=NEW_JOIN_URL,
        advisor_id="0b7e4d2a-1c3f-4e5a-8d9b-6a2c1f0e3d44",
    )
    for event in (new, reassigned) if meeting_first else (reassigned, new):
        handler = on_meeting_event if event is new else on_appointment_changed
        await handler(deps, event)
        if event is reassigned and not meeting_first:  # the old link must not be resent
            assert mailbox.keys(appointment.appointment_id) == ["r1.confirmation"]

    message = mailbox.one(appointment.appointment_id, "advisor_changed")
    text = parts.text(message)
    assert "Votre rendez-vous visio avec la Caf sera assuré par Karim Benali." in text
    assert "Il remplace celui du message précédent, qui ne fonctionne plus." in text
    assert NEW_JOIN_URL in text and old.join_url not in text
    [event] = parts.calendar(message).walk("VEVENT")
    assert (str(event["URL"]), event["SEQUENCE"]) == (NEW_JOIN_URL, 2)


async def test_a_meeting_that_cannot_be_created_is_said_and_nobody_waits(
    deps, make, mailbox, publisher, parts
) -> None:
    appointment = make.appointment()
    await on_appointment_requested(deps, appointment)
    await on_meeting_event(deps, make.meeting_failed(appointment))

    message = mailbox.one(appointment.appointment_id, "meeting_unavailable")
    assert "La Caf de Paris vous contactera pour convenir de la suite." in parts.text(message)
    [sent] = publisher.events(appointment.appointment_id)
    assert (sent.kind, sent.event_type) == ("meeting_unavailable", "NotificationSent")
    reminders = await deps.pool.fetchval(
        "SELECT count(*) FROM reminders WHERE appointment_id = $1 AND status = 'pending'",
        appointment.appointment_id,
    )
    assert reminders == 0


async def test_redelivered_or_reemitted_events_send_nothing_more(
    deps, make, mailbox, publisher
) -> None:
    appointment = make.appointment()
    meeting = make.meeting(appointment)
    await _book(deps, appointment, meeting)
    rescheduled = make.rescheduled(appointment, 2, appointment.start + timedelta(hours=1))
    await on_appointment_changed(deps, rescheduled)

    for _ in range(2):  # redelivered, as after a rebalance
        await on_meeting_event(deps, meeting)
        await on_appointment_requested(deps, appointment)
        await on_appointment_changed(deps, rescheduled)
    await on_meeting_event(deps, make.meeting(appointment))  # re-emitted: a new event id

    assert mailbox.keys(appointment.appointment_id) == ["r1.confirmation", "r2.rescheduled"]
    assert len(publisher.events(appointment.appointment_id)) == 2


async def test_both_halves_at_once_still_one_email_each(deps, make, mailbox, publisher) -> None:
    pairs = [(a, make.meeting(a)) for a in (make.appointment() for _ in range(8))]
    await asyncio.gather(
        *(on_appointment_requested(deps, appointment) for appointment, _ in pairs),
        *(on_meeting_event(deps, meeting) for _, meeting in pairs),
    )
    for appointment, _ in pairs:
        assert mailbox.keys(appointment.appointment_id) == ["r1.confirmation"]
        assert len(publisher.events(appointment.appointment_id)) == 1


@pytest.mark.parametrize("fault", ["451", "drop"])
async def test_an_email_the_relay_could_not_take_is_sent_once_later(
    deps, make, sink, mailbox, publisher, clock, fault
) -> None:
    appointment = make.appointment()
    await on_appointment_requested(deps, appointment)
    if fault == "451":
        sink.handler.fail_next(1)
    else:
        sink.handler.drop_next(1)  # the line cut mid-message, before the relay kept it

    await on_meeting_event(deps, make.meeting(appointment))  # no exception: nothing to retry
    assert mailbox.messages() == [] and publisher.events() == []

    assert (await poll_once(deps))["settled"] == 0  # not before its retry time
    clock.advance(seconds=deps.settings.mail_retry_initial_s)
    assert (await poll_once(deps))["settled"] == 1
    assert mailbox.keys(appointment.appointment_id) == ["r1.confirmation"]
    [sent] = publisher.events(appointment.appointment_id)
    assert isinstance(sent, NotificationSent)
    clock.advance(hours=1)
    await poll_once(deps)
    assert mailbox.keys(appointment.appointment_id) == ["r1.confirmation"]


async def test_a_refused_address_is_a_failure_with_the_smtp_code_until_corrected(
    deps, make, sink, mailbox, publisher
) -> None:
    appointment = make.appointment(email="gone@example.org")
    sink.handler.refuse_recipients.add("gone@example.org")
    await _book(deps, appointment, make.meeting(appointment))

    [failed] = publisher.events(appointment.appointment_id)
    assert isinstance(failed, NotificationFailed)
    assert (failed.kind, failed.reason, failed.smtp_code) == ("confirmation", "smtp_rejected", 550)
    assert "gone@example.org" not in failed.detail
    [row] = await _dispatches(deps, appointment.appointment_id)
    assert (row["status"], row["smtp_code"], row["sent_at"]) == ("failed", 550, None)

    # A new time changes nothing for an address that bounces…
    later = appointment.start + timedelta(hours=1)
    await on_appointment_changed(deps, make.rescheduled(appointment, 2, later))
    assert len(publisher.events(appointment.appointment_id)) == 1
    # …a corrected one gets its first confirmation.
    await on_appointment_changed(deps, make.contact_corrected(appointment, 3, "amina@example.net"))
    assert mailbox.keys(appointment.appointment_id) == ["r3.confirmation"]


async def test_a_join_url_off_the_allow_list_is_never_mailed(
    deps, make, mailbox, publisher
) -> None:
    appointment = make.appointment()
    await _book(
        deps,
        appointment,
        make.meeting(appointment, join_url="https://teams.evil.example/l/meetup-join/x"),
    )
    assert mailbox.messages() == []
    [failed] = publisher.events(appointment.appointment_id)
    assert (failed.reason, failed.smtp_code) == ("join_url_not_allowed", None)
    assert "teams.evil.example" in failed.detail


async def test_an_appointment_already_over_is_not_mailed(deps, make, mailbox, publisher, clock):
    appointment = make.appointment()
    clock.set(appointment.start + timedelta(hours=1))
    await _book(deps, appointment, make.meeting(appointment))
    assert mailbox.messages() == []
    [failed] = publisher.events(appointment.appointment_id)
    assert failed.reason == "appointment_over"


async def test_a_change_before_its_appointment_waits_for_a_replay(deps, make) -> None:
    appointment = make.appointment()
    with pytest.raises(Transient):
        await on_appointment_changed(deps, make.cancelled(appointment, 2))
    processed = await deps.pool.fetchval("SELECT count(*) FROM processed_events")
    assert processed == 0  # not marked: the consumer retries, then dead-letters for replay


async def test_an_outcome_kafka_did_not_take_is_published_later(
    deps, make, mailbox, publisher
) -> None:
    appointment = make.appointment()
    await on_appointment_requested(deps, appointment)
    publisher.fail_next = 1
    with pytest.raises(ConnectionError):
        await on_meeting_event(deps, make.meeting(appointment))
    assert mailbox.keys(appointment.appointment_id) == ["r1.confirmation"]  # out and logged
    assert publisher.events() == []

    await asyncio.gather(poll_once(deps), poll_once(deps))  # two replicas at once
    [sent] = publisher.events(appointment.appointment_id)
    assert isinstance(sent, NotificationSent)
    assert mailbox.keys(appointment.appointment_id) == ["r1.confirmation"]


async def test_the_service_role_cannot_reach_beyond_its_grants(deps) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await deps.pool.execute("DELETE FROM dispatches")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await deps.pool.execute("CREATE TABLE notifications.intruder (id int)")


async def test_personal_data_is_forgotten_after_its_retention(deps, make, clock) -> None:
    appointment = make.appointment()
    await _book(deps, appointment, make.meeting(appointment))
    clock.set(appointment.start + timedelta(days=deps.settings.retention_days - 1))
    assert (await poll_once(deps))["forgotten"] == 0
    clock.advance(days=2)
    assert (await poll_once(deps))["forgotten"] == 1

    tables = ("appointments", "meetings", "reminders")
    for table in tables:
        count = await deps.pool.fetchval(
            f"SELECT count(*) FROM {table} WHERE appointment_id = $1", appointment.appointment_id
        )
        assert count == 0, table
    [row] = await _dispatches(deps, appointment.appointment_id)  # the record of what was sent
    assert row["status"] == "sent" and "@" not in row["recipient_sha256"]


async def test_a_batch_of_many_appointments_books_each_once_and_a_redelivery_doubles_nothing(
    deps, make, mailbox, publisher
) -> None:
    """The consumer's batches: one event per appointment, step 1 in one transaction for them
    all. The requests in one batch, their meetings in the next: each person gets one
    confirmation, and each is announced once, even when both batches come again."""
    appointments = [make.appointment() for _ in range(12)]
    meetings = [make.meeting(appointment) for appointment in appointments]
    await on_events(deps, appointments)
    assert mailbox.messages() == []
    await on_events(deps, meetings)
    await on_events(deps, [*meetings[:6], *appointments[6:]])  # redelivered, mixed

    for appointment in appointments:
        mailbox.one(appointment.appointment_id, "confirmation")
        [sent] = publisher.events(appointment.appointment_id)
        assert isinstance(sent, NotificationSent) and sent.kind == "confirmation"
    assert len(mailbox.messages()) == len(publisher.published) == 12
    unpublished = await deps.pool.fetchval(
        "SELECT count(*) FROM dispatches WHERE published_at IS NULL"
    )
    assert unpublished == 0


class _Noting:
    """The pool, each connection it lends noting the statements it runs."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool, self.statements = pool, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pool, name)

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        def note(record: LoggedQuery) -> None:
            self.statements.append(record.query)

        async with self.pool.acquire() as conn:
            conn.add_query_logger(note)
            try:
                yield conn
            finally:
                conn.remove_query_logger(note)


async def _statements_of(deps, events) -> list[str]:
    """The statements `on_events` sends for this batch, on every connection it takes."""
    noting = _Noting(deps.pool)
    await on_events(dataclasses.replace(deps, pool=noting), events)
    return noting.statements


async def test_a_batch_of_first_requests_is_one_transaction_and_no_outbox_look_up(
    deps, make, mailbox, publisher
) -> None:
    """A backlog's requests come before their meetings: nothing is owed yet, so their batch is
    step 1 alone — no settling, no look-up of outcomes to publish — and the meeting that comes
    next still gets its email and its announcement."""
    appointments = [make.appointment() for _ in range(20)]
    statements = await _statements_of(deps, appointments)
    assert statements.count("BEGIN;") == 1, statements
    assert not [q for q in statements if "published_at IS NULL" in q], statements
    for appointment in appointments[:2]:
        await on_events(deps, [make.meeting(appointment)])
        mailbox.one(appointment.appointment_id, "confirmation")
        [sent] = publisher.events(appointment.appointment_id)
        assert isinstance(sent, NotificationSent)


async def test_a_batch_of_meetings_is_settled_in_as_many_statements_as_one(
    deps, make, mailbox
) -> None:
    """Settling a batch (step 2) is one transaction for all of its appointments: their locks,
    their states, their dispatches, their reminders and their settle flags each in one round
    trip, so twenty confirmations cost the statements of one — not twenty transactions."""
    counts = {}
    for size in (1, 20):
        appointments = [make.appointment() for _ in range(size)]
        await on_events(deps, appointments)
        statements = await _statements_of(
            deps, [make.meeting(appointment) for appointment in appointments]
        )
        for appointment in appointments:
            mailbox.one(appointment.appointment_id, "confirmation")
        counts[size] = len(statements)
    assert counts[20] == counts[1], counts
    reminders = await deps.pool.fetchval("SELECT count(*) FROM reminders")
    assert reminders == 21 * len(deps.settings.reminder_offsets_minutes)
    flagged = await deps.pool.fetchval(
        "SELECT count(*) FROM appointments WHERE settle_after IS NOT NULL"
    )
    assert flagged == 0  # every appointment settled


async def test_in_a_batch_an_email_the_relay_could_not_take_holds_back_that_appointment_alone(
    deps, make, sink, mailbox, publisher, clock
) -> None:
    """The relay refuses one email of a batch for now (451): that appointment waits for the
    poller, the others of the batch are sent, logged and announced in the same pass."""
    appointments = [make.appointment() for _ in range(6)]
    await on_events(deps, appointments)
    sink.handler.fail_next(1)
    await on_events(deps, [make.meeting(appointment) for appointment in appointments])

    sent = [a for a in appointments if mailbox.keys(a.appointment_id) == ["r1.confirmation"]]
    [waiting] = [a for a in appointments if mailbox.keys(a.appointment_id) == []]
    assert len(sent) == 5 and len(publisher.published) == 5
    row = await deps.pool.fetchrow(
        "SELECT settle_attempts, settle_error FROM appointments WHERE appointment_id = $1",
        waiting.appointment_id,
    )
    assert row["settle_attempts"] == 1 and "451" in row["settle_error"]
    assert await _dispatches(deps, waiting.appointment_id) == []
    assert (
        await deps.pool.fetchval(
            "SELECT count(DISTINCT appointment_id) FROM reminders WHERE status = 'pending'"
        )
        == 5
    )  # no reminder before the person has the link

    clock.advance(seconds=deps.settings.mail_retry_initial_s)
    assert (await poll_once(deps))["settled"] == 1
    for appointment in appointments:
        assert mailbox.keys(appointment.appointment_id) == ["r1.confirmation"]
    assert len(publisher.published) == 6


async def test_a_batch_that_fails_after_the_relay_took_its_emails_sends_none_again(
    deps, make, mailbox, publisher
) -> None:
    """One appointment of a batch breaks its settling (not the relay's doing): the batch's
    transaction rolls back once every other email has been handed over, and the consumer
    splits the batch. The emails the relay took are recorded on the next try, not sent again;
    the broken one fails alone."""
    appointments = [make.appointment() for _ in range(6)]
    await on_events(deps, appointments)
    meetings = [make.meeting(appointment) for appointment in appointments]
    broken = str(appointments[2].appointment_id)
    send = deps.send_mail

    async def send_but_one(mail) -> None:
        if mail.message_id.startswith(f"<{broken}."):
            raise RuntimeError("a defect in this appointment's email")
        await send(mail)

    deps = dataclasses.replace(deps, send_mail=send_but_one)
    with pytest.raises(RuntimeError, match="a defect"):
        await on_events(deps, meetings)
    others = [a for a in appointments if a is not appointments[2]]
    for appointment in others:  # all handed over before the rollback
        assert mailbox.keys(appointment.appointment_id) == ["r1.confirmation"]
    assert await deps.pool.fetchval("SELECT count(*) FROM dispatches") == 0

    await on_events(deps, meetings[:2])  # the consumer's halves
    with pytest.raises(RuntimeError, match="a defect"):
        await on_events(deps, meetings[2:])
    await on_events(deps, meetings[3:])
    for appointment in others:
        assert mailbox.keys(appointment.appointment_id) == ["r1.confirmation"]
        assert len(await _dispatches(deps, appointment.appointment_id)) == 1
    assert len(mailbox.messages()) == 5 and len(publisher.published) == 5


async def test_a_batch_composes_its_emails_only_as_fast_as_the_relay_takes_them(
    deps, make, mailbox
) -> None:
    """Thirty confirmations in one batch, a relay slow to answer: at most twice as many emails
    as the mailer's connections are composed and waiting at once (a batch of hundreds is not
    held in memory), and every one goes out."""
    appointments = [make.appointment() for _ in range(30)]
    await on_events(deps, appointments)
    send, waiting, most = deps.send_mail, 0, 0

    async def slow_relay(mail) -> None:
        nonlocal waiting, most
        waiting += 1
        most = max(most, waiting)
        try:
            for _ in range(3):  # slow: the other sends get their turn before this one ends
                await asyncio.sleep(0)
            await send(mail)
        finally:
            waiting -= 1

    await on_events(
        dataclasses.replace(deps, send_mail=slow_relay),
        [make.meeting(appointment) for appointment in appointments],
    )
    for appointment in appointments:
        assert mailbox.keys(appointment.appointment_id) == ["r1.confirmation"]
    assert 1 < most <= 2 * deps.settings.smtp_max_connections
