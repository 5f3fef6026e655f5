"""Exactly one meeting per appointment, or a MeetingFailed with a reason, whatever Graph does:
throttling, 503, 504, "committed then 504", latency — and a process killed mid-call."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
from visio_runtime.service import Runtime
from visio_shared import AppointmentEvent, AppointmentRequested

if TYPE_CHECKING:
    from conftest import EmulatorControl, FakePublisher

ADVISORS = (
    "a1b2c3d4-0000-4000-8000-00000000ad01",
    "a1b2c3d4-0000-4000-8000-00000000ad02",
    "a1b2c3d4-0000-4000-8000-00000000ad03",
)
WITHOUT_TEAMS = ADVISORS[2]

Make = Callable[..., AppointmentRequested]
Handle = Callable[[AppointmentEvent], Any]


async def test_under_faults_every_appointment_ends_with_one_meeting_or_a_reason(
    service: Runtime,
    control: EmulatorControl,
    publisher: FakePublisher,
    make_appointment: Make,
    to_record: Callable[..., Any],
) -> None:
    await control.mailbox(WITHOUT_TEAMS, teams_enabled=False)
    await control.faults(
        throttle_rate=0.1,
        unavailable_rate=0.1,
        gateway_timeout_rate=0.1,
        commit_then_timeout_rate=0.1,
        retry_after_seconds=0.01,
        latency_ms=20,
        seed=20310304,
    )
    booked = [make_appointment(advisor_id=ADVISORS[i % 3]) for i in range(15)]

    outcomes = await asyncio.gather(
        *(
            service.consumer.process(to_record(event, service.topics.appointments, offset=i))
            for i, event in enumerate(booked)
        )
    )

    assert set(outcomes) == {"handled"}  # nothing dead-lettered
    stats = await control.stats()
    assert sum(stats["faults_injected"].values()) > 10  # the faults did happen
    said = {json.loads(s.message)["appointment_id"]: json.loads(s.message) for s in publisher.calls}
    assert len(publisher.calls) == len(said) == 15  # one answer each
    per_appointment = Counter(stats["events_per_external_id"])
    for event in booked:
        answer = said[str(event.appointment_id)]
        if event.advisor.id == WITHOUT_TEAMS:
            assert answer["event_type"] == "MeetingFailed"
            assert answer["reason"] == "teams_not_enabled"
        else:
            assert answer["event_type"] == "MeetingReady"
        assert per_appointment[str(event.appointment_id)] == 1  # never a duplicate event
    assert stats["online_meetings_total"] == 10
    assert max(stats["max_in_flight_per_mailbox"].values()) <= 4
    assert stats["calls"]["entra.token"] == 1  # one token for every meeting


async def test_a_process_killed_mid_call_still_makes_one_event(
    handle: Handle,
    control: EmulatorControl,
    publisher: FakePublisher,
    pool: asyncpg.Pool,
    make_appointment: Make,
) -> None:
    """Graph made the event, but its answer never reached the handler: the process died
    (here: its task is cancelled) before the commit. The redelivery finds the event."""
    event = make_appointment()
    await control.faults(latency_ms=600, endpoints=["graph.events.create"])
    handling = asyncio.create_task(handle(event))
    async with asyncio.timeout(10):
        while (await control.stats())["events_total"] == 0:
            await asyncio.sleep(0.01)
    assert not handling.done()  # still waiting for Graph's answer

    handling.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handling
    assert publisher.calls == []
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM meetings WHERE appointment_id = $1", event.appointment_id
        )
        == 0
    )
    await control.faults()  # Graph answers promptly again

    await handle(event)  # the redelivery

    stats = await control.stats()
    assert stats["events_total"] == 1
    assert stats["calls"]["graph.events.create"] == 1  # found by its key, not created again
    [ready] = [json.loads(s.message) for s in publisher.calls]
    assert ready["event_type"] == "MeetingReady"
    assert ready["graph_event_id"] == (await control.events())[0]["event_id"]
