"""A new appointment's meeting, handled against the emulator and PostgreSQL: what reaches
Graph, what is published, what is stored — and that repeating any of it changes none of that."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
from visio_meetings.graph import GraphClient
from visio_meetings.handlers import MeetingsDeps, handle_event
from visio_meetings.payloads import meeting_key
from visio_meetings.settings import MeetingsSettings
from visio_runtime.errors import Transient
from visio_shared import (
    AppointmentEvent,
    AppointmentRequested,
    Headers,
    MeetingFailed,
    MeetingReady,
    Topics,
)

if TYPE_CHECKING:
    from conftest import EmulatorControl, FakePublisher

Make = Callable[..., AppointmentRequested]
Handle = Callable[[AppointmentEvent], Any]


def answers(publisher: FakePublisher) -> list[dict[str, Any]]:
    return [json.loads(sent.message) for sent in publisher.calls]


async def meeting_row(pool: asyncpg.Pool, appointment_id: uuid.UUID) -> asyncpg.Record | None:
    return await pool.fetchrow("SELECT * FROM meetings WHERE appointment_id = $1", appointment_id)


async def test_an_appointment_gets_its_meeting_and_a_meeting_ready(
    handle: Handle,
    control: EmulatorControl,
    publisher: FakePublisher,
    pool: asyncpg.Pool,
    topics: Topics,
    make_appointment: Make,
) -> None:
    event = make_appointment(recording_authorised=False)

    await handle(event)

    # Graph: one event, with its idempotency keys, and a meeting set up without recording.
    [record] = await control.events()
    assert record["transaction_id"] == meeting_key(event.appointment_id)
    assert record["external_id"] == str(event.appointment_id)
    assert record["event"]["attendees"] == []
    [stored] = await control.online_meetings()
    options = stored["meeting"]
    assert options["allowRecording"] is False
    assert options["allowTranscription"] is False
    assert options["allowedPresenters"] == "organizer"
    assert options["lobbyBypassSettings"]["scope"] == "organization"

    # Kafka: one MeetingReady on meetings.v1, keyed by the appointment, with lineage and the
    # dial-in details of the meeting.
    [sent] = publisher.calls
    assert sent.topic == topics.meetings
    assert sent.key == str(event.appointment_id).encode()
    ready = MeetingReady.model_validate_json(sent.message)
    assert ready.join_url == record["join_url"]
    assert ready.graph_event_id == record["event_id"]
    assert ready.online_meeting_id == options["id"]
    assert ready.join_meeting_id == options["joinMeetingIdSettings"]["joinMeetingId"]
    assert ready.passcode == options["joinMeetingIdSettings"]["passcode"]
    assert ready.conference_id == options["audioConferencing"]["conferenceId"]
    assert ready.dial_in_url == options["audioConferencing"]["dialinUrl"]
    assert ready.advisor_id == event.advisor.id
    assert (ready.appointment_id, ready.revision) == (event.appointment_id, event.revision)
    assert ready.correlation_id == event.correlation_id
    assert ready.causation_id == event.event_id
    assert sent.headers is not None
    assert sent.headers[Headers.EVENT_TYPE] == "MeetingReady"
    assert sent.headers[Headers.EVENT_ID] == str(ready.event_id)

    # PostgreSQL: the meeting row, what a later change needs, and the processed marker.
    row = await meeting_row(pool, event.appointment_id)
    assert row is not None
    assert row["status"] == "ready"
    assert (row["join_url"], row["graph_event_id"]) == (ready.join_url, ready.graph_event_id)
    assert row["online_meeting_id"] == ready.online_meeting_id
    assert row["transaction_id"] == meeting_key(event.appointment_id)
    assert (row["start_at"], row["duration_minutes"]) == (event.start, event.duration_minutes)
    assert (row["timezone"], row["recording_authorised"]) == ("Indian/Reunion", False)
    processed = await pool.fetchval(
        "SELECT event_type FROM processed_events WHERE event_id = $1", event.event_id
    )
    assert processed == "AppointmentRequested"


async def test_recording_is_allowed_only_when_authorised(
    handle: Handle, control: EmulatorControl, make_appointment: Make
) -> None:
    await handle(make_appointment(recording_authorised=True))

    [stored] = await control.online_meetings()
    assert stored["meeting"]["allowRecording"] is True
    assert stored["meeting"]["allowTranscription"] is True
    assert stored["meeting"]["recordAutomatically"] is False


async def test_the_same_event_twice_makes_one_meeting_and_one_answer(
    handle: Handle, control: EmulatorControl, publisher: FakePublisher, make_appointment: Make
) -> None:
    event = make_appointment()
    await handle(event)
    calls_after_first = (await control.stats())["calls"]

    await handle(event)

    stats = await control.stats()
    assert stats["events_total"] == 1
    assert stats["calls"] == calls_after_first  # the duplicate never reached Graph
    assert len(publisher.calls) == 1


async def test_another_request_for_a_ready_appointment_is_not_answered_twice(
    handle: Handle,
    control: EmulatorControl,
    publisher: FakePublisher,
    pool: asyncpg.Pool,
    make_appointment: Make,
) -> None:
    first = make_appointment()
    # Same appointment, another event id (a producer that re-emitted it, say).
    second = first.model_copy(update={"event_id": uuid.uuid4()})
    await handle(first)

    await handle(second)

    assert (await control.stats())["events_total"] == 1
    assert [a["event_type"] for a in answers(publisher)] == ["MeetingReady"]
    marked = await pool.fetchval(
        "SELECT count(*) FROM processed_events WHERE event_id = ANY($1::uuid[])",
        [first.event_id, second.event_id],
    )
    assert marked == 2


async def test_a_504_that_hid_a_success_is_retried_into_the_same_event(
    handle: Handle, control: EmulatorControl, publisher: FakePublisher, make_appointment: Make
) -> None:
    event = make_appointment()
    # Graph creates the event but the client only sees a 504; the client's own retry
    # replays the transactionId.
    await control.faults(
        commit_then_timeout_rate=1.0, endpoints=["graph.events.create"], max_faults=1
    )

    await handle(event)

    stats = await control.stats()
    assert stats["events_total"] == 1
    assert stats["transaction_replays"] == {meeting_key(event.appointment_id): 1}
    [ready] = answers(publisher)
    assert ready["join_url"] == (await control.events())[0]["join_url"]


async def test_a_504_handed_to_the_consumer_is_found_on_redelivery(
    settings: MeetingsSettings,
    deps: MeetingsDeps,
    control: EmulatorControl,
    publisher: FakePublisher,
    pool: asyncpg.Pool,
    make_appointment: Make,
) -> None:
    """No retry in process: the redelivered event finds the event Graph made by its key,
    and never creates again."""
    client = GraphClient.from_settings(settings.model_copy(update={"graph_attempts": 1}))
    once = MeetingsDeps(deps.pool, client, deps.publisher, deps.topics)
    event = make_appointment()
    await control.faults(
        commit_then_timeout_rate=1.0, endpoints=["graph.events.create"], max_faults=1
    )
    try:
        with pytest.raises(Transient, match="504"):
            await handle_event(event, once)
        assert publisher.calls == []
        assert await meeting_row(pool, event.appointment_id) is None

        await handle_event(event, once)  # what the consumer's retry does
    finally:
        await client.aclose()

    stats = await control.stats()
    assert stats["events_total"] == 1
    assert stats["calls"]["graph.events.create"] == 1
    assert stats["transaction_replays"] == {}
    assert [a["event_type"] for a in answers(publisher)] == ["MeetingReady"]


async def test_an_answer_repeated_after_a_crash_is_the_same_event(
    deps: MeetingsDeps, control: EmulatorControl, publisher: FakePublisher, make_appointment: Make
) -> None:
    """The broker took the answer, then the process died before committing: the redelivery
    publishes again, with the same event id, so consumers skip it as a duplicate."""

    class CrashAfterPublish:
        async def publish(self, message: Any, topic: str, **kwargs: Any) -> None:
            await publisher.publish(message, topic, **kwargs)
            raise ConnectionResetError("the process died right after publishing")

    event = make_appointment()
    crashing = MeetingsDeps(deps.pool, deps.graph, CrashAfterPublish(), deps.topics)
    with pytest.raises(ConnectionResetError):
        await handle_event(event, crashing)
    await handle_event(event, deps)

    first, again = answers(publisher)
    assert first["event_type"] == again["event_type"] == "MeetingReady"
    assert first["event_id"] == again["event_id"]
    assert first["join_url"] == again["join_url"]
    assert (await control.stats())["events_total"] == 1


async def test_long_throttling_is_left_to_the_consumer_with_retry_after(
    handle: Handle,
    control: EmulatorControl,
    publisher: FakePublisher,
    pool: asyncpg.Pool,
    make_appointment: Make,
) -> None:
    event = make_appointment()
    await control.faults(throttle_rate=1.0, retry_after_seconds=3, endpoints=["graph"])

    with pytest.raises(Transient) as caught:
        await handle(event)

    assert caught.value.retry_after == 3
    assert publisher.calls == []
    assert await meeting_row(pool, event.appointment_id) is None
    processed = await pool.fetchval(
        "SELECT 1 FROM processed_events WHERE event_id = $1", event.event_id
    )
    assert processed is None


async def test_an_access_policy_refusal_answers_meeting_failed(
    handle: Handle,
    control: EmulatorControl,
    publisher: FakePublisher,
    pool: asyncpg.Pool,
    topics: Topics,
    make_appointment: Make,
) -> None:
    event = make_appointment()
    await control.access_policy(allowed_user_ids=["someone-else@visio-rdv.onmicrosoft.com"])

    await handle(event)

    [sent] = publisher.calls
    assert sent.topic == topics.meetings
    assert sent.key == str(event.appointment_id).encode()
    failed = MeetingFailed.model_validate_json(sent.message)
    assert failed.reason == "access_policy_missing"
    assert "Grant-CsApplicationAccessPolicy" in failed.detail  # what to do
    assert "ErrorAccessDenied" in failed.detail  # what Graph said
    assert "request-id " in failed.detail  # for Microsoft support
    assert (failed.appointment_id, failed.causation_id) == (event.appointment_id, event.event_id)
    assert (await control.stats())["events_total"] == 0
    row = await meeting_row(pool, event.appointment_id)
    assert row is not None
    assert row["status"] == "failed"
    assert row["failure_reason"].startswith("access_policy_missing: ")

    await handle(event)  # redelivered: already answered
    assert len(publisher.calls) == 1


async def test_a_teams_policy_refusal_after_the_event_answers_meeting_failed(
    handle: Handle,
    control: EmulatorControl,
    publisher: FakePublisher,
    pool: asyncpg.Pool,
    make_appointment: Make,
) -> None:
    # The calendar is allowed, the Teams application access policy is not.
    await control.access_policy(allowed_user_ids=None, online_meetings_allowed_user_ids=[])
    event = make_appointment()

    await handle(event)

    [failed] = answers(publisher)
    assert failed["event_type"] == "MeetingFailed"
    assert failed["reason"] == "access_policy_missing"
    row = await meeting_row(pool, event.appointment_id)
    assert row is not None
    # The event made before the refusal is known, so a cancellation will remove it.
    assert row["graph_event_id"] == (await control.events())[0]["event_id"]


async def test_a_mailbox_without_teams_fails_then_a_replay_uses_the_same_event(
    handle: Handle,
    control: EmulatorControl,
    publisher: FakePublisher,
    make_appointment: Make,
) -> None:
    await control.mailbox("a1b2c3d4-0000-4000-8000-00000000ad01", teams_enabled=False)
    event = make_appointment()

    await handle(event)

    [failed] = answers(publisher)
    assert failed["event_type"] == "MeetingFailed"
    assert failed["reason"] == "teams_not_enabled"
    assert "Teams licence" in failed["detail"]
    [record] = await control.events()
    assert record["join_url"] is None

    # Licensed, and the appointment's request emitted again: the same event gets its meeting.
    await control.mailbox("a1b2c3d4-0000-4000-8000-00000000ad01", teams_enabled=True)
    await handle(event.model_copy(update={"event_id": uuid.uuid4()}))

    ready = answers(publisher)[-1]
    assert ready["event_type"] == "MeetingReady"
    [record] = await control.events()
    assert ready["join_url"] == record["join_url"]
    assert ready["graph_event_id"] == record["event_id"]
