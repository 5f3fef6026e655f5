"""A batch of events handled together (`visio_meetings.batch`), on the emulator and PostgreSQL:
what it costs — a few statements and a few `$batch`es per step for the whole batch, however
many appointments — and that each event keeps its own fate in it: a refusal is that
appointment's MeetingFailed, a throttled request waits its own Retry-After, a transient
failure is retried (by the consumer, after the split) without calling Graph again for it in
between, and an event that needs an operator is dead-lettered alone."""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
from visio_meetings import store
from visio_meetings.batch import Failures, handle_batch
from visio_meetings.graph import GraphClient
from visio_meetings.handlers import MeetingsDeps
from visio_meetings.meeting import Created, provision_many
from visio_meetings.payloads import meeting_key
from visio_meetings.store import SCHEMA
from visio_runtime.db import create_pool
from visio_runtime.service import Runtime
from visio_shared import AppointmentEvent, AppointmentRequested, Headers, Topics

if TYPE_CHECKING:
    from conftest import Changes, EmulatorControl, FakePublisher

Make = Callable[..., AppointmentRequested]
ADVISORS = [f"a1b2c3d4-0000-4000-8000-0000000bad{n:02d}" for n in range(10)]
STEPS = 3  # creates, Teams meeting look-ups, options (a first try needs no look-up first)


class CountingPool:
    """A pool of the service's role that notes every statement its connections send (the
    locks' release included): the database round trips of what runs through it."""

    def __init__(self, pool: asyncpg.Pool, statements: list[str]) -> None:
        self.pool = pool
        self.statements = statements

    async def taken(self) -> list[str]:
        await asyncio.sleep(0)  # asyncpg tells its query loggers on the next turn of the loop
        taken, self.statements[:] = list(self.statements), []
        return taken


@pytest.fixture
async def counting(service_dsn: str) -> AsyncIterator[CountingPool]:
    statements: list[str] = []

    def note(logged: Any) -> None:
        statements.append(logged.query)

    async def listen(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(note)  # on each acquire: a set of loggers, so noted once

    # The service's own pool: it sends no reset query as it takes a connection back.
    pool = await create_pool(service_dsn, SCHEMA.schema, min_size=1, max_size=1, setup=listen)
    try:
        yield CountingPool(pool, statements)
    finally:
        await pool.close()


def _answers(publisher: FakePublisher) -> dict[str, dict[str, Any]]:
    said = [json.loads(sent.message) for sent in publisher.calls]
    assert len({a["appointment_id"] for a in said}) == len(said)  # one answer each
    return {a["appointment_id"]: a for a in said}


async def test_a_batchs_statements_and_graph_batches_do_not_grow_per_appointment(
    counting: CountingPool,
    graph: GraphClient,
    publisher: FakePublisher,
    topics: Topics,
    control: EmulatorControl,
    make_appointment: Make,
) -> None:
    deps = MeetingsDeps(counting.pool, graph, publisher, topics)
    # A connection's first use of these statements asks PostgreSQL about their array types
    # (asyncpg's introspection, once per connection): not the batch's cost.
    await handle_batch([make_appointment()], deps, Failures())
    publisher.calls.clear()
    costs = {}
    everyone = []
    for count in (5, 40):
        await control.reset()
        await counting.taken()
        booked = [make_appointment(advisor_id=ADVISORS[n % 10]) for n in range(count)]
        everyone += booked

        await handle_batch(booked, deps, Failures())

        stats = await control.stats()
        costs[count] = (len(await counting.taken()), stats["batches"])
        # Each step of all of them in batches: Outlook's (the creates) of four, which Graph
        # runs in one round, over eight batches at most (40: eight of five, one waiting a
        # round in each), Teams' of twenty; no request alone, no dependsOn. No look-up: none
        # of these keys was ever tried.
        outlook_batches = min(math.ceil(count / 4), 8)
        assert stats["batches"] == outlook_batches + 2 * math.ceil(count / 20)
        assert stats["outlook_requests_queued"] == {5: 0, 40: 8}[count]
        assert "graph.events.list" not in stats["calls"]
        assert stats["batched_requests"] == STEPS * count
        assert "dependsOn" not in json.dumps(stats)
        assert stats["live_events_per_external_id"] == {str(b.appointment_id): 1 for b in booked}
    # The locks, what is known, the keys marked tried, the completions, the locks' release:
    # the same for 5 as for 40.
    assert costs[5][0] == costs[40][0] == 5
    said = _answers(publisher)
    assert len(said) == 45 and {a["event_type"] for a in said.values()} == {"MeetingReady"}
    rows = await counting.pool.fetch(
        "SELECT appointment_id, status, graph_event_id, correlation_id, attendance_due_at, "
        "start_at + make_interval(mins => duration_minutes) AS end_at FROM meetings "
        "WHERE appointment_id = ANY($1::uuid[])",
        [b.appointment_id for b in everyone],
    )
    assert len(rows) == 45
    for row in rows:
        answer = said[str(row["appointment_id"])]
        assert (row["status"], row["graph_event_id"]) == ("ready", answer["graph_event_id"])
        assert str(row["correlation_id"]) == answer["correlation_id"]
        assert row["attendance_due_at"] == row["end_at"] + deps.attendance_grace
    marked = await counting.pool.fetchval(
        "SELECT count(*) FROM processed_events WHERE event_id = ANY($1::uuid[])",
        [b.event_id for b in everyone],
    )
    assert marked == 45
    # A meeting made is never created again under its key: the keys are forgotten.
    tried = await counting.pool.fetchval(
        "SELECT count(*) FROM create_attempts WHERE key = ANY($1::text[])",
        [meeting_key(b.appointment_id) for b in everyone],
    )
    assert tried == 0


async def test_a_batch_handled_again_answers_nothing_twice(
    counting: CountingPool,
    graph: GraphClient,
    publisher: FakePublisher,
    topics: Topics,
    control: EmulatorControl,
    make_appointment: Make,
) -> None:
    deps = MeetingsDeps(counting.pool, graph, publisher, topics)
    booked = [make_appointment(advisor_id=ADVISORS[n]) for n in range(6)]
    await handle_batch(booked, deps, Failures())
    await control.reset()
    await counting.taken()

    await handle_batch(booked, deps, Failures())  # redelivered, all of it

    assert len(publisher.calls) == 6
    assert (await control.stats())["calls"] == {}  # Graph not asked again
    assert len(await counting.taken()) == 3  # the locks, what is known, their release


async def test_one_refused_advisor_and_one_throttled_request_in_a_batch_are_their_own(
    counting: CountingPool,
    client: GraphClient,
    waits: list[float],
    publisher: FakePublisher,
    topics: Topics,
    control: EmulatorControl,
    make_appointment: Make,
) -> None:
    deps = MeetingsDeps(counting.pool, client, publisher, topics)
    booked = [make_appointment(advisor_id=ADVISORS[n]) for n in range(8)]
    refused, throttled, lost = booked[0], booked[1], booked[2]
    await control.mailbox(refused.advisor.id, exists=False)
    await control.script_creates(str(throttled.appointment_id), "429", retry_after=0.3)
    await control.script_creates(str(lost.appointment_id), "commit-then-504")

    await handle_batch(booked, deps, Failures())

    said = _answers(publisher)
    assert said[str(refused.appointment_id)]["event_type"] == "MeetingFailed"
    assert said[str(refused.appointment_id)]["reason"] == "advisor_not_found"
    others = [b for b in booked if b is not refused]
    assert {said[str(b.appointment_id)]["event_type"] for b in others} == {"MeetingReady"}
    stats = await control.stats()
    assert stats["live_events_per_external_id"] == {str(b.appointment_id): 1 for b in others}
    assert stats["transaction_replays"] == {meeting_key(lost.appointment_id): 1}
    # Two waits: the 504's backoff, then what was left of the throttled create's own 0.3 s.
    assert len(waits) == 2 and sum(waits) == pytest.approx(0.3)
    # Eight creates (first tries: no look-up) in two batches (four Outlook requests a batch),
    # the two Teams steps in one each, and the creates' two retries, each its own batch.
    assert stats["batches"] == 2 + 1 + 1 + 2
    row = await counting.pool.fetchrow(
        "SELECT status, failure_reason FROM meetings WHERE appointment_id = $1",
        refused.appointment_id,
    )
    assert row is not None and row["status"] == "failed"
    assert row["failure_reason"].startswith("advisor_not_found")


async def test_a_transient_failure_in_a_batch_is_retried_alone_after_its_retry_after(
    service: Runtime,
    control: EmulatorControl,
    publisher: FakePublisher,
    make_appointment: Make,
    to_record: Callable[..., Any],
    changes: type[Changes],
) -> None:
    """Throttled longer than the client waits in process: that event fails, its neighbours
    are answered, and the consumer's split brings it back alone without asking Graph again
    (each halving would have been a create ignoring Graph's Retry-After); the consumer's
    retry, after it, makes the meeting."""
    booked = [make_appointment(advisor_id=ADVISORS[n]) for n in range(6)]
    await control.script_creates(str(booked[3].appointment_id), "429", retry_after=1)

    outcomes = await _together(service, to_record, booked)

    assert outcomes == ["handled"] * 6
    retried = service.metrics.value("events_retried_total", event_type="AppointmentRequested")
    assert retried == 1
    assert {a["event_type"] for a in _answers(publisher).values()} == {"MeetingReady"}
    stats = await control.stats()
    assert stats["responses"]["graph.events.create"] == {"201": 6, "429": 1}
    # No look-up for the six first tries; the retry's, whose key was tried, looks up first.
    assert stats["calls"]["graph.events.list"] == 1
    assert stats["events_total"] == 6


async def test_an_event_that_needs_an_operator_is_dead_lettered_alone(
    service: Runtime,
    control: EmulatorControl,
    publisher: FakePublisher,
    make_appointment: Make,
    to_record: Callable[..., Any],
    changes: type[Changes],
) -> None:
    """A cancellation Graph refuses, in a batch with new appointments: it goes to the
    dead-letter topic with its reason, the new ones get their meetings."""
    booked = make_appointment(advisor_id=ADVISORS[0])
    assert await _together(service, to_record, [booked]) == ["handled"]
    await control.access_policy(allowed_user_ids=ADVISORS[1:])
    publisher.calls.clear()
    others = [make_appointment(advisor_id=ADVISORS[n]) for n in range(1, 6)]

    outcomes = await _together(
        service, to_record, [*others[:2], changes.cancelled(booked), *others[2:]]
    )

    assert outcomes == ["handled", "handled", "dead_lettered", "handled", "handled", "handled"]
    by_topic = Counter(sent.topic for sent in publisher.calls)
    assert by_topic == {service.topics.meetings: 5, service.topics.dlq("meetings"): 1}
    [letter] = [s for s in publisher.calls if s.topic == service.topics.dlq("meetings")]
    assert letter.headers is not None
    assert letter.headers[Headers.DLQ_ERROR_CLASS] == "NeedsOperator"
    assert "access_policy_missing" in letter.headers[Headers.DLQ_REASON]
    said = [json.loads(s.message) for s in publisher.calls if s.topic == service.topics.meetings]
    assert {a["event_type"] for a in said} == {"MeetingReady"}
    assert len(await control.live_events()) == 6  # the cancelled one's included: for ops


async def _together(
    service: Runtime, to_record: Callable[..., Any], events: list[AppointmentEvent]
) -> list[str]:
    """The events as records of one poll: the consumer hands them over as one batch."""
    return list(
        await asyncio.gather(
            *(
                service.consumer.process(to_record(event, service.topics.appointments, offset=n))
                for n, event in enumerate(events)
            )
        )
    )


async def test_a_create_whose_answer_was_lost_is_looked_up_then_not_made_again(
    deps: MeetingsDeps, publisher: FakePublisher, control: EmulatorControl, make_appointment: Make
) -> None:
    """An earlier try marked the key tried, sent the create, and died before the answer (the
    event is in the calendar, meetings does not know it): the next try looks the key up, finds
    the event, and makes none. Only a key never tried skips the look-up."""
    booked = make_appointment(advisor_id=ADVISORS[0])
    spec = deps.spec(booked)
    async with deps.pool.acquire() as conn:
        assert await store.first_attempts(conn, [spec.key]) == {spec.key}
        assert await store.first_attempts(conn, [spec.key]) == set()  # tried now
    [earlier] = await provision_many(deps.graph, [spec], untried={spec.key})
    assert isinstance(earlier, Created)

    await handle_batch([booked], deps, Failures())

    stats = await control.stats()
    assert stats["calls"]["graph.events.list"] == 1
    assert stats["calls"]["graph.events.create"] == 1  # the earlier try's alone
    assert stats["live_events_per_external_id"] == {str(booked.appointment_id): 1}
    [said] = _answers(publisher).values()
    assert said["event_type"] == "MeetingReady"
    assert said["graph_event_id"] == earlier.graph_event_id
