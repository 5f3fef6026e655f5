"""After the meeting: the poller asks the emulator (over HTTPS) for the attendance report and
the recordings, and publishes what happened — once, at the right time, never for a meeting
that was cancelled. The clock is the test's; the report's timing is the emulator's script."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
from visio_meetings.graph import GraphClient
from visio_meetings.poller import MeetingsPollerDeps, poll_once
from visio_meetings.settings import MeetingsSettings
from visio_shared import AppointmentEvent, AppointmentRequested, Topics

if TYPE_CHECKING:
    from conftest import Changes, EmulatorControl, FakePublisher

Make = Callable[..., AppointmentRequested]
Handle = Callable[[AppointmentEvent], Any]
GRACE = dt.timedelta(minutes=15)  # the setting's default, which `deps` in conftest uses


@dataclass
class Clock:
    now: dt.datetime

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(dt.datetime(2031, 1, 1, tzinfo=dt.UTC))


@pytest.fixture
async def poll(
    pool: asyncpg.Pool,
    graph: GraphClient,
    publisher: FakePublisher,
    topics: Topics,
    settings: MeetingsSettings,
    clock: Clock,
) -> Callable[[], Any]:
    # Other tests' meetings are not this test's business (the database is the session's).
    await pool.execute("UPDATE meetings SET attendance_due_at = NULL")
    tuned = settings.model_copy(update={"attendance_max_attempts": 3})
    deps = MeetingsPollerDeps(pool, graph, publisher, topics, tuned, clock)
    return lambda: poll_once(deps)


def published(publisher: FakePublisher, appointment_id: uuid.UUID) -> list[dict[str, Any]]:
    answers = [json.loads(sent.message) for sent in publisher.calls]
    return [
        a
        for a in answers
        if a["appointment_id"] == str(appointment_id) and a["event_type"] != "MeetingReady"
    ]


def end_of(booked: AppointmentRequested) -> dt.datetime:
    return booked.start + dt.timedelta(minutes=booked.duration_minutes)


async def meeting_id(pool: asyncpg.Pool, booked: AppointmentRequested) -> str:
    found: str = await pool.fetchval(
        "SELECT online_meeting_id FROM meetings WHERE appointment_id = $1", booked.appointment_id
    )
    return found


def stay(join: int, leave: int) -> dict[str, int]:
    return {"join_offset_seconds": join, "leave_offset_seconds": leave}


ORGANIZER = {"kind": "organizer", "intervals": [stay(-120, 2700)]}


async def test_a_held_meeting_is_recorded_once_after_its_end_plus_grace(
    handle: Handle,
    poll: Callable[[], Any],
    clock: Clock,
    control: EmulatorControl,
    publisher: FakePublisher,
    pool: asyncpg.Pool,
    make_appointment: Make,
) -> None:
    booked = make_appointment()
    await handle(booked)
    online = await meeting_id(pool, booked)
    public = {
        "kind": "anonymous",
        "display_name": "Marie Payet",
        "intervals": [stay(300, 900), stay(960, 2640)],  # late, dropped, came back
    }
    colleague = {"kind": "internal", "intervals": [stay(0, 600)]}
    await control.attendance(online, participants=[ORGANIZER, public, colleague])

    clock.now = end_of(booked) + GRACE - dt.timedelta(seconds=1)
    await poll()
    assert published(publisher, booked.appointment_id) == []  # not due yet

    clock.now += dt.timedelta(seconds=1)
    await poll()
    [recorded] = published(publisher, booked.appointment_id)
    assert recorded["event_type"] == "MeetingAttendanceRecorded"
    assert (recorded["correlation_id"], recorded["revision"]) == (str(booked.correlation_id), 1)
    assert recorded["online_meeting_id"] == online
    assert recorded["public_attended"] is True
    roles = {p["role"]: p for p in recorded["participants"]}
    assert set(roles) == {"organizer", "public", "other"}
    assert roles["public"]["total_attendance_seconds"] == 600 + 1680
    assert [i["duration_seconds"] for i in roles["public"]["intervals"]] == [600, 1680]
    assert "Marie" not in json.dumps(recorded)  # no display name leaves Graph

    clock.now += dt.timedelta(days=1)
    await poll()
    assert len(published(publisher, booked.appointment_id)) == 1  # exactly once
    assert await control.calls("graph.recordings.list") == 0  # recording was not authorised


async def test_a_no_show_has_the_organizer_alone(
    handle: Handle,
    poll: Callable[[], Any],
    clock: Clock,
    control: EmulatorControl,
    publisher: FakePublisher,
    pool: asyncpg.Pool,
    make_appointment: Make,
) -> None:
    booked = make_appointment()
    await handle(booked)
    online = await meeting_id(pool, booked)
    await control.attendance(online, participants=[ORGANIZER])
    clock.now = end_of(booked) + GRACE
    await poll()
    [recorded] = published(publisher, booked.appointment_id)
    assert recorded["public_attended"] is False
    assert [p["role"] for p in recorded["participants"]] == ["organizer"]


async def test_a_late_report_is_asked_for_again_and_a_missing_one_is_given_up(
    handle: Handle,
    poll: Callable[[], Any],
    clock: Clock,
    control: EmulatorControl,
    publisher: FakePublisher,
    pool: asyncpg.Pool,
    settings: MeetingsSettings,
    make_appointment: Make,
) -> None:
    late, missing = make_appointment(), make_appointment()
    for booked in (late, missing):
        await handle(booked)
    late_meeting = await meeting_id(pool, late)
    await control.attendance(late_meeting, participants=[ORGANIZER], available_after_list_calls=1)
    retry = dt.timedelta(seconds=settings.attendance_retry_interval_s)
    clock.now = end_of(late) + GRACE
    await poll()
    assert publisher.calls[2:] == []  # neither report is listed yet
    row = await pool.fetchrow(
        "SELECT attendance_attempts, attendance_due_at, attendance_last_error FROM meetings "
        "WHERE appointment_id = $1",
        late.appointment_id,
    )
    assert row is not None
    assert (row["attendance_attempts"], row["attendance_due_at"]) == (1, clock.now + retry)
    assert row["attendance_last_error"].startswith("no_report")

    clock.now += retry
    await poll()
    [recorded] = published(publisher, late.appointment_id)
    assert recorded["event_type"] == "MeetingAttendanceRecorded"
    assert published(publisher, missing.appointment_id) == []

    clock.now += retry
    await poll()  # the third attempt, the last one
    [unavailable] = published(publisher, missing.appointment_id)
    assert unavailable["event_type"] == "MeetingAttendanceUnavailable"
    assert unavailable["reason"].startswith("no_report")
    assert "after 3 attempts" in unavailable["reason"]


async def test_a_recorded_meeting_announces_its_recordings_without_downloading_them(
    handle: Handle,
    poll: Callable[[], Any],
    clock: Clock,
    control: EmulatorControl,
    publisher: FakePublisher,
    pool: asyncpg.Pool,
    make_appointment: Make,
) -> None:
    booked = make_appointment(recording_authorised=True)
    await handle(booked)
    online = await meeting_id(pool, booked)
    external = {"kind": "external", "intervals": [stay(0, 2400)]}
    await control.attendance(online, participants=[ORGANIZER, external])
    [made] = await control.recordings(online, {"created_offset_seconds": 60})
    clock.now = end_of(booked) + GRACE
    await poll()
    recorded, recording = published(publisher, booked.appointment_id)
    assert recorded["public_attended"] is True
    assert recording["event_type"] == "MeetingRecordingAvailable"
    assert (recording["recording_id"], recording["content_correlation_id"]) == (
        made["id"],
        made["contentCorrelationId"],
    )
    assert dt.datetime.fromisoformat(recording["created_at"]) == booked.start + dt.timedelta(
        minutes=1
    )
    assert await control.calls("graph.recordings.content") == 0


async def test_a_cancelled_appointment_is_never_asked_about(
    handle: Handle,
    poll: Callable[[], Any],
    clock: Clock,
    control: EmulatorControl,
    publisher: FakePublisher,
    make_appointment: Make,
    changes: type[Changes],
) -> None:
    booked = make_appointment()
    await handle(booked)
    await handle(changes.cancelled(booked))
    clock.now = end_of(booked) + dt.timedelta(days=30)
    await poll()
    assert [a["event_type"] for a in published(publisher, booked.appointment_id)] == [
        "MeetingCancelled"
    ]
    assert await control.calls("graph.attendanceReports.list") == 0
