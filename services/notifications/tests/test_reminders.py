"""Reminders scheduled in PostgreSQL and fired by the poller, with the clock in the test's hand:
at their offsets (48 h and 1 h by default), never in the past, never after a cancellation,
moved by a reschedule, once each across replicas, relay faults and restarts."""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import replace
from datetime import timedelta

import pytest
from asyncpg.connection import LoggedQuery
from visio_notifications import reminders, store
from visio_notifications.handlers import (
    on_appointment_changed,
    on_appointment_requested,
    on_meeting_event,
)
from visio_notifications.poller import poll_once
from visio_shared import NotificationFailed, NotificationSent
from visio_shared.links import LinkPurpose, read_link


async def _book(deps, make, **fields):
    appointment = make.appointment(**fields)
    await on_appointment_requested(deps, appointment)
    await on_meeting_event(deps, make.meeting(appointment))
    return appointment


async def _reminder_rows(deps, appointment_id) -> dict[int, str]:
    rows = await deps.pool.fetch(
        "SELECT offset_minutes, status FROM reminders WHERE appointment_id = $1", appointment_id
    )
    return {row["offset_minutes"]: row["status"] for row in rows}


async def test_reminders_fire_at_48_hours_and_1_hour_before_once_each(
    deps, make, clock, mailbox, publisher, parts
) -> None:
    appointment = await _book(deps, make)
    start = appointment.start
    assert await _reminder_rows(deps, appointment.appointment_id) == {
        2880: "pending",
        60: "pending",
    }

    clock.set(start - timedelta(hours=48, seconds=1))
    assert (await poll_once(deps))["reminders"] == 0
    clock.advance(seconds=1)
    assert (await poll_once(deps))["reminders"] == 1
    assert (await poll_once(deps))["reminders"] == 0
    first = mailbox.one(appointment.appointment_id, "reminder-2880")
    assert first["Subject"] == (
        "Rappel : votre rendez-vous visio avec la Caf le jeudi 3 décembre à 10 h 00"
    )

    clock.set(start - timedelta(minutes=60))
    await poll_once(deps)
    clock.set(start + timedelta(minutes=5))
    await poll_once(deps)
    second = mailbox.one(appointment.appointment_id, "reminder-60")
    assert second["Subject"] == (
        "Rappel : votre rendez-vous visio avec la Caf aujourd'hui à 10 h 00"
    )
    text = parts.text(second)
    assert "Nous vous rappelons votre rendez-vous visio avec la Caf aujourd'hui à 10 h 00" in text
    assert make.meeting(appointment).join_url in text
    assert mailbox.keys(appointment.appointment_id) == [
        "r1.confirmation",
        "r1.reminder-2880",
        "r1.reminder-60",
    ]
    reminders = [e for e in publisher.events() if e.kind == "reminder"]
    assert all(isinstance(e, NotificationSent) for e in reminders)
    assert [(e.reminder_offset_minutes, e.message_id) for e in reminders] == [
        (2880, first["Message-ID"]),
        (60, second["Message-ID"]),
    ]


async def test_no_reminder_in_the_past(deps, make, clock, mailbox) -> None:
    appointment = make.appointment()
    clock.set(appointment.start - timedelta(hours=3))  # booked three hours ahead
    await on_appointment_requested(deps, appointment)
    await on_meeting_event(deps, make.meeting(appointment))
    assert await _reminder_rows(deps, appointment.appointment_id) == {
        2880: "skipped",
        60: "pending",
    }
    clock.set(appointment.start - timedelta(minutes=59))
    await poll_once(deps)
    assert mailbox.keys(appointment.appointment_id) == ["r1.confirmation", "r1.reminder-60"]


async def test_none_after_a_cancellation(deps, make, clock, mailbox) -> None:
    appointment = await _book(deps, make)
    await on_appointment_changed(deps, make.cancelled(appointment, 2))
    assert await _reminder_rows(deps, appointment.appointment_id) == {
        2880: "cancelled",
        60: "cancelled",
    }
    for before in (timedelta(hours=48), timedelta(hours=1)):
        clock.set(appointment.start - before)
        assert (await poll_once(deps))["reminders"] == 0
    assert mailbox.keys(appointment.appointment_id) == ["r1.confirmation", "r2.cancellation"]


async def test_a_reschedule_moves_them(deps, make, clock, mailbox) -> None:
    appointment = await _book(deps, make)
    clock.set(appointment.start - timedelta(hours=47))
    await poll_once(deps)  # the 48-hour reminder of the first time
    new_start = appointment.start + timedelta(days=7)
    await on_appointment_changed(deps, make.rescheduled(appointment, 2, new_start))

    clock.set(appointment.start - timedelta(minutes=30))  # the old 1-hour mark: nothing
    assert (await poll_once(deps))["reminders"] == 0
    clock.set(new_start - timedelta(hours=48))
    await poll_once(deps)
    clock.set(new_start - timedelta(hours=1))
    await poll_once(deps)
    assert mailbox.keys(appointment.appointment_id) == [
        "r1.confirmation",
        "r1.reminder-2880",
        "r2.rescheduled",
        "r2.reminder-2880",
        "r2.reminder-60",
    ]


async def test_a_late_poller_sends_only_the_closest_reminder(deps, make, clock, mailbox) -> None:
    appointment = await _book(deps, make)
    clock.set(appointment.start - timedelta(minutes=30))  # the service was down two days
    await poll_once(deps)
    assert mailbox.keys(appointment.appointment_id) == ["r1.confirmation", "r1.reminder-60"]
    assert await _reminder_rows(deps, appointment.appointment_id) == {
        2880: "skipped",
        60: "sent",
    }


async def test_a_change_of_offsets_lines_the_reminders_up_in_one_statement(
    deps, make, clock
) -> None:
    """An offset no longer configured is dropped, a new one lined up, a kept one left as it
    is: one statement, whatever the offsets (it was one per offset and one more)."""
    appointment = await _book(deps, make)
    statements: list[str] = []
    async with deps.pool.acquire() as conn, conn.transaction():
        state = await store.load_state(conn, appointment.appointment_id)

        def count(record: LoggedQuery) -> None:
            statements.append(record.query)

        conn.add_query_logger(count)
        await reminders.sync(conn, state, [60, 24 * 60, 30], clock())
        conn.remove_query_logger(count)

    assert len(statements) == 1
    assert await _reminder_rows(deps, appointment.appointment_id) == {
        2880: "cancelled",
        1440: "pending",
        60: "pending",
        30: "pending",
    }


async def test_lining_one_appointments_reminders_up_reads_no_one_elses(deps, make, clock) -> None:
    """The reminders of 3,000 other appointments are pending (the poller's index holds them
    all): bringing one appointment's in line reads its own rows by their key, never that index
    (it read every pending reminder on each sync, 100 pages a sync in the bench)."""
    appointment = await _book(deps, make)
    others = [uuid.uuid4() for _ in range(3000)]
    await deps.pool.execute(
        "INSERT INTO reminders (appointment_id, offset_minutes, revision, start_at, due_at, "
        "status) SELECT o, m, 1, $2::timestamptz, $2::timestamptz - m * interval '1 minute', "
        "'pending' "
        "FROM unnest($1::uuid[]) AS o, unnest(ARRAY[2880, 60]) AS m",
        others,
        appointment.start,
    )
    # The backend's scans of that index, before and after, in one transaction (PostgreSQL 15
    # also counts there its earlier transactions' scans not yet reported).
    scans = "SELECT pg_stat_get_xact_numscans('reminders_due'::regclass)"
    async with deps.pool.acquire() as conn, conn.transaction():
        state = await store.load_state(conn, appointment.appointment_id)
        before = await conn.fetchval(scans)
        await reminders.sync(conn, state, [60, 24 * 60, 30], clock())
        after = await conn.fetchval(scans)
    assert after == before
    assert await _reminder_rows(deps, appointment.appointment_id) == {
        2880: "cancelled",
        1440: "pending",
        60: "pending",
        30: "pending",
    }
    assert (
        await deps.pool.fetchval(
            "SELECT count(*) FROM reminders WHERE status = 'pending' AND appointment_id <> $1",
            appointment.appointment_id,
        )
        == 6000
    )


async def test_the_offsets_are_a_setting(deps, make, clock, mailbox) -> None:
    deps = replace(
        deps, settings=deps.settings.model_copy(update={"reminder_offsets_minutes": [24 * 60]})
    )
    appointment = await _book(deps, make)
    clock.set(appointment.start - timedelta(hours=24))
    await poll_once(deps)
    assert mailbox.keys(appointment.appointment_id) == ["r1.confirmation", "r1.reminder-1440"]
    assert mailbox.one(appointment.appointment_id, "reminder-1440")["Subject"].endswith(
        "demain à 10 h 00"
    )


async def test_replicas_polling_together_send_each_reminder_once(
    deps, make, clock, mailbox
) -> None:
    appointments = [await _book(deps, make) for _ in range(6)]
    clock.set(appointments[0].start - timedelta(hours=48))
    rounds = await asyncio.gather(*(poll_once(deps) for _ in range(3)))
    assert sum(r["reminders"] for r in rounds) == 6
    for appointment in appointments:
        assert mailbox.keys(appointment.appointment_id) == [
            "r1.confirmation",
            "r1.reminder-2880",
        ]


@pytest.mark.parametrize("fault", ["451", "drop"])
async def test_a_reminder_the_relay_could_not_take_is_sent_once_later(
    deps, make, clock, sink, mailbox, fault
) -> None:
    appointment = await _book(deps, make)
    clock.set(appointment.start - timedelta(hours=1))
    if fault == "451":
        sink.handler.fail_next(1)
    else:
        sink.handler.drop_next(1)
    await poll_once(deps)
    assert mailbox.keys(appointment.appointment_id) == ["r1.confirmation"]
    await poll_once(deps)  # before its retry time: still nothing
    assert mailbox.keys(appointment.appointment_id) == ["r1.confirmation"]
    clock.advance(seconds=deps.settings.mail_retry_initial_s)
    await poll_once(deps)
    clock.advance(minutes=10)
    await poll_once(deps)
    assert mailbox.keys(appointment.appointment_id) == ["r1.confirmation", "r1.reminder-60"]


async def test_an_ambiguous_cut_resends_under_the_same_message_id(
    deps, make, clock, sink, mailbox
) -> None:
    """The relay kept the message and the line broke before its 250: SMTP cannot tell, so the
    reminder goes again, under the same Message-ID, which mail clients merge."""
    appointment = await _book(deps, make)
    clock.set(appointment.start - timedelta(hours=1))
    sink.handler.drop_next(1, after_storing=True)
    await poll_once(deps)
    clock.advance(seconds=deps.settings.mail_retry_initial_s)
    await poll_once(deps)
    assert mailbox.keys(appointment.appointment_id) == [
        "r1.confirmation",
        "r1.reminder-60",
        "r1.reminder-60",
    ]


async def test_a_reminder_refused_for_good_is_a_failure_event(
    deps, make, clock, sink, publisher
) -> None:
    appointment = await _book(deps, make)
    sink.handler.refuse_recipients.add(str(appointment.user.email))  # the mailbox was closed
    clock.set(appointment.start - timedelta(hours=1))
    await poll_once(deps)
    [failed] = [e for e in publisher.events() if e.kind == "reminder"]
    assert isinstance(failed, NotificationFailed)
    assert (failed.reminder_offset_minutes, failed.smtp_code) == (60, 550)
    assert (await _reminder_rows(deps, appointment.appointment_id))[60] == "failed"


async def test_a_reminder_links_to_the_appointment_as_it_stands(
    deps, make, clock, mailbox, parts, link_keys
) -> None:
    appointment = await _book(deps, make)
    corrected = make.contact_corrected(appointment, 2, "amina.h@example.net")
    await on_appointment_changed(deps, corrected)  # same time: the reminders keep revision 1
    clock.set(appointment.start - timedelta(hours=48))
    await poll_once(deps)

    reminder = mailbox.one(appointment.appointment_id, "reminder-2880")
    assert ".r1.reminder-2880@" in reminder["Message-ID"]
    [token] = re.findall(
        r"https://rdv\.caf\.example/booking/mon-rendez-vous/(\S+)", parts.text(reminder)
    )
    claims = read_link(link_keys, token, LinkPurpose.MANAGE, now=clock.now)
    assert (claims.appointment_id, claims.revision) == (appointment.appointment_id, 2)
