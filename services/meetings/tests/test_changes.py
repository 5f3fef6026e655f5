"""Changes of an appointment after its meeting is made — reschedule, cancellation, change of
advisor, recording withdrawn — and changes that arrive before the appointment itself."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
from visio_meetings.graph import GraphClient
from visio_meetings.handlers import NeedsOperator
from visio_meetings.payloads import meeting_key
from visio_shared import AppointmentEvent, AppointmentRequested

if TYPE_CHECKING:
    from conftest import Changes, EmulatorControl, FakePublisher

ADVISOR = "a1b2c3d4-0000-4000-8000-00000000ad01"
OTHER_ADVISOR = "a1b2c3d4-0000-4000-8000-00000000ad02"
LATER = dt.datetime(2031, 3, 11, 14, 0, tzinfo=dt.timezone(dt.timedelta(hours=4)))

Make = Callable[..., AppointmentRequested]
Handle = Callable[[AppointmentEvent], Any]


def answers(publisher: FakePublisher) -> list[dict[str, Any]]:
    return [json.loads(sent.message) for sent in publisher.calls]


async def meeting_row(pool: asyncpg.Pool, appointment_id: uuid.UUID) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT * FROM meetings WHERE appointment_id = $1", appointment_id)
    assert row is not None
    return row


async def test_a_reschedule_moves_the_event_and_keeps_the_link(
    handle: Handle,
    control: EmulatorControl,
    publisher: FakePublisher,
    pool: asyncpg.Pool,
    make_appointment: Make,
    changes: type[Changes],
) -> None:
    booked = make_appointment()
    await handle(booked)
    change = changes.rescheduled(booked, LATER)

    await handle(change)
    await handle(change)  # redelivered

    [record] = await control.events()
    assert record["start_utc"].startswith("2031-03-11T10:00:00")  # 14:00 in La Réunion
    assert record["end_utc"].startswith("2031-03-11T10:30:00")
    assert record["event"]["originalStartTimeZone"] == "Mauritius Standard Time"
    ready, moved = answers(publisher)
    assert moved["event_type"] == "MeetingRescheduled"
    assert moved["join_url"] == ready["join_url"] == record["join_url"]
    assert moved["graph_event_id"] == ready["graph_event_id"]
    assert (moved["revision"], moved["causation_id"]) == (2, str(change.event_id))
    row = await meeting_row(pool, booked.appointment_id)
    assert (row["revision"], row["start_at"], row["duration_minutes"]) == (2, LATER, 30)


async def test_a_cancellation_cancels_the_event_once(
    handle: Handle,
    control: EmulatorControl,
    publisher: FakePublisher,
    pool: asyncpg.Pool,
    make_appointment: Make,
    changes: type[Changes],
) -> None:
    booked = make_appointment()
    await handle(booked)

    await handle(changes.cancelled(booked))
    await handle(changes.cancelled(booked, revision=3))  # cancelled again by another system

    [record] = await control.events()
    assert record["is_deleted"] is True
    assert record["cancel_comment"]
    [meeting] = await control.online_meetings()
    assert meeting["is_deleted"] is True
    _, cancelled = answers(publisher)
    assert cancelled["event_type"] == "MeetingCancelled"
    assert (cancelled["graph_event_id"], cancelled["advisor_id"]) == (record["event_id"], ADVISOR)
    assert (await control.stats())["calls"]["graph.events.cancel"] == 1
    assert (await meeting_row(pool, booked.appointment_id))["status"] == "cancelled"


async def test_an_event_already_gone_counts_as_cancelled(
    handle: Handle,
    graph: GraphClient,
    control: EmulatorControl,
    publisher: FakePublisher,
    pool: asyncpg.Pool,
    make_appointment: Make,
    changes: type[Changes],
) -> None:
    booked = make_appointment()
    await handle(booked)
    # The advisor cancelled it in Outlook already.
    assert await graph.cancel_event(ADVISOR, (await control.events())[0]["event_id"])

    await handle(changes.cancelled(booked))

    assert answers(publisher)[-1]["event_type"] == "MeetingCancelled"
    assert (await control.stats())["responses"]["graph.events.cancel"] == {"202": 1, "404": 1}
    assert (await meeting_row(pool, booked.appointment_id))["status"] == "cancelled"


async def test_a_new_advisor_gets_a_new_meeting_and_the_old_one_is_cancelled(
    handle: Handle,
    control: EmulatorControl,
    publisher: FakePublisher,
    pool: asyncpg.Pool,
    make_appointment: Make,
    changes: type[Changes],
) -> None:
    booked = make_appointment(recording_authorised=True)
    await handle(booked)
    change = changes.reassigned(booked, OTHER_ADVISOR)

    await handle(change)
    await handle(change)  # redelivered

    old, new = await control.events()
    assert (old["user_id"], old["is_deleted"]) == (ADVISOR, True)
    assert (new["user_id"], new["is_deleted"]) == (OTHER_ADVISOR, False)
    assert new["transaction_id"] == meeting_key(booked.appointment_id, reassigned_at=2)
    assert new["start_utc"] == old["start_utc"]
    first, ready = answers(publisher)
    assert (ready["event_type"], ready["revision"]) == ("MeetingReady", 2)
    assert ready["advisor_id"] == OTHER_ADVISOR
    assert ready["join_url"] == new["join_url"] != first["join_url"]
    meetings = {m["user_id"]: m for m in await control.online_meetings()}
    assert meetings[OTHER_ADVISOR]["meeting"]["allowRecording"] is True  # consent carried over
    stats = await control.stats()
    appointment = str(booked.appointment_id)
    assert stats["live_events_per_external_id"] == {appointment: 1}
    assert stats["events_per_external_id"] == {appointment: 2}
    row = await meeting_row(pool, booked.appointment_id)
    assert (row["advisor_id"], row["graph_event_id"]) == (OTHER_ADVISOR, new["event_id"])


async def test_back_to_the_first_advisor_is_a_new_meeting_again(
    handle: Handle,
    control: EmulatorControl,
    publisher: FakePublisher,
    make_appointment: Make,
    changes: type[Changes],
) -> None:
    booked = make_appointment()
    await handle(booked)
    await handle(changes.reassigned(booked, OTHER_ADVISOR))

    await handle(changes.reassigned(booked, ADVISOR, revision=3))

    live = await control.live_events()
    assert [(e["user_id"], e["transaction_id"]) for e in live] == [
        (ADVISOR, meeting_key(booked.appointment_id, reassigned_at=3))
    ]
    links = [a["join_url"] for a in answers(publisher)]
    assert len(set(links)) == 3


async def test_a_withdrawal_turns_recording_off(
    handle: Handle,
    control: EmulatorControl,
    publisher: FakePublisher,
    pool: asyncpg.Pool,
    make_appointment: Make,
    changes: type[Changes],
) -> None:
    booked = make_appointment(recording_authorised=True)
    await handle(booked)

    await handle(changes.withdrawn(booked))

    [meeting] = await control.online_meetings()
    assert meeting["meeting"]["allowRecording"] is False
    assert meeting["meeting"]["allowTranscription"] is False
    assert meeting["meeting"]["lobbyBypassSettings"]["scope"] == "organization"
    assert [a["event_type"] for a in answers(publisher)] == ["MeetingReady"]
    assert (await meeting_row(pool, booked.appointment_id))["recording_authorised"] is False

    # A later change of advisor keeps it off.
    await handle(changes.reassigned(booked, OTHER_ADVISOR))
    meetings = {m["user_id"]: m for m in await control.online_meetings()}
    assert meetings[OTHER_ADVISOR]["meeting"]["allowRecording"] is False


async def test_a_withdrawal_before_the_appointment_is_held_then_honoured(
    handle: Handle,
    control: EmulatorControl,
    publisher: FakePublisher,
    pool: asyncpg.Pool,
    make_appointment: Make,
    changes: type[Changes],
) -> None:
    booked = make_appointment(recording_authorised=True)

    await handle(changes.withdrawn(booked))  # consents.v1 went faster than appointments.v1

    assert (await control.stats())["calls"] == {}
    assert await pool.fetchval("SELECT count(*) FROM pending_events") >= 1
    await handle(booked)

    [meeting] = await control.online_meetings()
    assert meeting["meeting"]["allowRecording"] is False
    # Made without recording at once: one options PATCH, no second one to turn it off.
    assert await control.calls("graph.onlineMeetings.update") == 1
    held = await pool.fetchval(
        "SELECT count(*) FROM pending_events WHERE appointment_id = $1", booked.appointment_id
    )
    assert held == 0
    assert [a["event_type"] for a in answers(publisher)] == ["MeetingReady"]


async def test_changes_before_the_appointment_apply_once_it_arrives(
    handle: Handle,
    control: EmulatorControl,
    publisher: FakePublisher,
    make_appointment: Make,
    changes: type[Changes],
) -> None:
    """Its request waited in the dead-letter topic while a reschedule went by."""
    booked = make_appointment()
    change = changes.rescheduled(booked, LATER)
    await handle(change)

    await handle(booked)
    await handle(change)  # redelivered after all: applied once

    assert [a["event_type"] for a in answers(publisher)] == ["MeetingReady", "MeetingRescheduled"]
    [record] = await control.events()
    assert record["start_utc"].startswith("2031-03-11T10:00:00")


async def test_an_appointment_cancelled_before_it_arrives_gets_no_meeting(
    handle: Handle,
    control: EmulatorControl,
    publisher: FakePublisher,
    pool: asyncpg.Pool,
    make_appointment: Make,
    changes: type[Changes],
) -> None:
    booked = make_appointment()
    await handle(changes.cancelled(booked))

    await handle(booked)

    assert (await control.stats())["calls"] == {}
    assert publisher.calls == []
    assert (await meeting_row(pool, booked.appointment_id))["status"] == "cancelled"


async def test_a_failed_meeting_keeps_the_new_time_for_a_new_advisor(
    handle: Handle,
    control: EmulatorControl,
    publisher: FakePublisher,
    make_appointment: Make,
    changes: type[Changes],
) -> None:
    await control.mailbox(ADVISOR, teams_enabled=False)
    booked = make_appointment()
    await handle(booked)
    await handle(changes.rescheduled(booked, LATER))  # nothing to move: kept

    await handle(changes.reassigned(booked, OTHER_ADVISOR, revision=3))

    assert [a["event_type"] for a in answers(publisher)] == ["MeetingFailed", "MeetingReady"]
    live = await control.live_events()
    assert [(e["user_id"], e["start_utc"][:19]) for e in live] == [
        (OTHER_ADVISOR, "2031-03-11T10:00:00")
    ]  # the first advisor's event without Teams is gone too


async def test_a_cancellation_graph_refuses_goes_to_an_operator(
    handle: Handle,
    control: EmulatorControl,
    publisher: FakePublisher,
    make_appointment: Make,
    changes: type[Changes],
) -> None:
    booked = make_appointment()
    await handle(booked)
    await control.access_policy(allowed_user_ids=[OTHER_ADVISOR])

    with pytest.raises(NeedsOperator, match="access_policy_missing"):
        await handle(changes.cancelled(booked))

    # No MeetingFailed: the person's appointment is cancelled all the same (booking knows).
    assert [a["event_type"] for a in answers(publisher)] == ["MeetingReady"]
    assert len(await control.live_events()) == 1
