"""Meetings made in JSON batches against the emulator over HTTPS: the same step of many
appointments in one `$batch`, and every promise of the one-at-a-time path kept — one event per
appointment whatever fails, each throttled request waiting its own Retry-After, a create whose
answer was lost (commit then 504) retried into the same event — over kept-alive connections."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import pytest
from visio_meetings.graph import GraphClient
from visio_meetings.graph_http import graph_ssl_context
from visio_meetings.handlers import MeetingsDeps, handle_event
from visio_meetings.meeting import Created, provision_many
from visio_meetings.payloads import MeetingSpec
from visio_meetings.provisioning import Provisioner
from visio_meetings.refusals import GraphRefused
from visio_meetings.settings import MeetingsSettings
from visio_meetings.tokens import TokenProvider
from visio_runtime.errors import Transient
from visio_shared import AppointmentRequested, Topics

if TYPE_CHECKING:
    from conftest import Changes, EmulatorControl, FakePublisher

Make = Callable[..., AppointmentRequested]
ADVISORS = [f"a1b2c3d4-0000-4000-8000-0000000bad0{n}" for n in range(5)]


def _specs(make: Make, changes: type[Changes], count: int) -> list[MeetingSpec]:
    return [
        changes.spec_of(make(advisor_id=ADVISORS[n % len(ADVISORS)], recording_authorised=n % 2))
        for n in range(count)
    ]


async def test_twenty_meetings_go_step_by_step_in_batches_none_waiting_for_outlook(
    client: GraphClient, control: EmulatorControl, make_appointment: Make, changes: type[Changes]
) -> None:
    specs = _specs(make_appointment, changes, 20)

    outcomes = await provision_many(client, specs)

    assert all(isinstance(outcome, Created) for outcome in outcomes)
    stats = await control.stats()
    # Look-ups, creates, meeting look-ups, options, nothing alone: the two Outlook steps in
    # five batches of four each (none waits for a round of Graph's), the two Teams steps in
    # one batch of twenty each.
    assert stats["batches"] == 5 + 5 + 1 + 1
    assert stats["batched_requests"] == 80
    assert stats["outlook_requests_queued"] == 0
    assert stats["calls"]["graph.events.list"] == 20
    assert stats["calls"]["graph.events.create"] == 20
    assert stats["calls"]["graph.onlineMeetings.update"] == 20
    assert "dependsOn" not in json.dumps(stats)
    assert stats["live_events_per_external_id"] == {str(s.appointment_id): 1 for s in specs}
    # Each outcome is its own appointment's (answers came back in any order).
    records = {r["external_id"]: r for r in await control.live_events()}
    for spec, outcome in zip(specs, outcomes, strict=True):
        assert isinstance(outcome, Created)
        assert outcome.graph_event_id == records[str(spec.appointment_id)]["event_id"]
        assert outcome.join_url == records[str(spec.appointment_id)]["join_url"]
    meetings = {m["meeting"]["id"]: m["meeting"] for m in await control.online_meetings()}
    for spec, outcome in zip(specs, outcomes, strict=True):
        assert isinstance(outcome, Created)
        assert meetings[outcome.online_meeting_id]["allowRecording"] is spec.recording_authorised


async def test_a_batch_holding_more_than_four_outlook_requests_is_seen_waiting(
    client: GraphClient,
    control: EmulatorControl,
    make_appointment: Make,
    changes: type[Changes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The check above is not vacuous: with twenty Outlook requests let into one batch (as
    before), the emulator counts the sixteen of each Outlook step that waited for a round."""
    monkeypatch.setattr("visio_meetings.graph_batches.OUTLOOK_AT_ONCE", 20)

    outcomes = await provision_many(client, _specs(make_appointment, changes, 20))

    assert all(isinstance(outcome, Created) for outcome in outcomes)
    stats = await control.stats()
    assert stats["batches"] == 4
    assert stats["outlook_requests_queued"] == 2 * 16


async def test_a_backlogs_outlook_steps_are_spread_over_eight_batches_then_filled(
    client: GraphClient, control: EmulatorControl, make_appointment: Make, changes: type[Changes]
) -> None:
    """A hundred meetings at once (a backlog): each Outlook step over eight batches side by
    side (13 requests each: four rounds of Graph's), not 25 batches of four — the HTTP
    requests of a step stay bounded — and the Teams steps in batches of twenty."""
    outcomes = await provision_many(client, _specs(make_appointment, changes, 100))

    assert all(isinstance(outcome, Created) for outcome in outcomes)
    stats = await control.stats()
    assert stats["batches"] == 8 + 8 + 5 + 5
    assert stats["outlook_requests_queued"] == 2 * (7 * (13 - 4) + (9 - 4))


async def test_mixed_outcomes_in_one_batch_give_each_appointment_exactly_one_event(
    client: GraphClient,
    waits: list[float],
    control: EmulatorControl,
    make_appointment: Make,
    changes: type[Changes],
) -> None:
    specs = _specs(make_appointment, changes, 6)
    throttled, unavailable, unknown = specs[0], specs[1], specs[2]
    await control.mailbox(unknown.advisor_id, exists=False)
    await _script(control, throttled, "429", retry_after=0.3)
    await _script(control, unavailable, "503", retry_after=0.1)

    outcomes = await provision_many(client, specs)

    refused = outcomes[2]
    assert isinstance(refused, GraphRefused) and refused.reason == "advisor_not_found"
    assert all(isinstance(o, Created) for n, o in enumerate(outcomes) if n != 2)
    stats = await control.stats()
    assert stats["responses"]["graph.events.create"] == {"429": 1, "503": 1, "201": 5}
    assert stats["responses"]["graph.events.list"] == {"200": 5, "404": 1}
    assert stats["live_events_per_external_id"] == {
        str(s.appointment_id): 1 for s in specs if s is not unknown
    }
    # Each waited its own Retry-After: the 503 went again after 0.1 s, not held for the 429's
    # 0.3 s, and the 429 not before its own time.
    assert waits == [pytest.approx(0.1), pytest.approx(0.2)]
    # The first try of each step (six look-ups, five creates: two batches each, at most four
    # Outlook requests a batch), and the two retries of creates.
    assert stats["batches"] == 2 + 2 + 1 + 1 + 2


async def test_a_create_committed_then_answered_504_inside_a_batch_is_not_doubled(
    client: GraphClient, control: EmulatorControl, make_appointment: Make, changes: type[Changes]
) -> None:
    specs = _specs(make_appointment, changes, 3)
    await _script(control, specs[0], "commit-then-504")

    outcomes = await provision_many(client, specs)

    assert all(isinstance(outcome, Created) for outcome in outcomes)
    stats = await control.stats()
    assert stats["live_events_per_external_id"] == {str(s.appointment_id): 1 for s in specs}
    assert stats["events_total"] == 3
    assert stats["transaction_replays"] == {specs[0].key: 1}


async def test_a_create_lost_every_time_is_found_by_the_next_try_not_made_again(
    client: GraphClient, control: EmulatorControl, make_appointment: Make, changes: type[Changes]
) -> None:
    """In-process attempts spent on commit-then-504s: the meeting is Transient (the consumer
    tries the appointment again later), and that try's look-up finds the event."""
    [spec] = _specs(make_appointment, changes, 1)
    await _script(control, spec, *["commit-then-504"] * 4)

    [first] = await provision_many(client, [spec])
    assert isinstance(first, Transient)
    [again] = await provision_many(client, [spec])

    assert isinstance(again, Created)
    stats = await control.stats()
    assert stats["calls"]["graph.events.create"] == 4  # none in the second try
    assert stats["events_total"] == 1


async def test_connections_to_graph_are_kept_and_reused(
    client: GraphClient,
    settings: MeetingsSettings,
    control: EmulatorControl,
    make_appointment: Make,
    changes: type[Changes],
) -> None:
    for _ in range(3):
        outcomes = await provision_many(client, _specs(make_appointment, changes, 10))
        assert all(isinstance(outcome, Created) for outcome in outcomes)

    stats = await control.stats()
    assert stats["batched_requests"] == 120
    assert stats["batches"] == 3 * (3 + 3 + 1 + 1)
    # At most one per batch sent side by side (ten Outlook requests: three batches at once).
    assert stats["connections"] <= 3

    # A client that closes its connections shows: the emulator sees one per batch.
    await control.reset()
    closing = httpx.AsyncClient(
        verify=graph_ssl_context(settings), limits=httpx.Limits(max_keepalive_connections=0)
    )
    graph = GraphClient(closing, TokenProvider(settings), settings.graph_base_url)
    try:
        await provision_many(graph, _specs(make_appointment, changes, 10))
    finally:
        await graph.aclose()
    assert (await control.stats())["connections"] == 3 + 3 + 1 + 1


async def test_handlers_making_meetings_at_the_same_time_share_their_batches(
    pool: asyncpg.Pool,
    graph: GraphClient,
    publisher: FakePublisher,
    topics: Topics,
    control: EmulatorControl,
    make_appointment: Make,
) -> None:
    provisioner = Provisioner(graph, window_s=0.5)
    deps = MeetingsDeps(pool, graph, publisher, topics, provisioner=provisioner)
    # As many as the test pool lets hold their appointment's lock at once.
    events = [make_appointment(advisor_id=ADVISORS[n]) for n in range(5)]

    await asyncio.gather(*(handle_event(event, deps) for event in events))
    await provisioner.aclose()

    ready = [json.loads(sent.message) for sent in publisher.calls]
    assert sorted(r["appointment_id"] for r in ready) == sorted(
        str(e.appointment_id) for e in events
    )
    assert {r["event_type"] for r in ready} == {"MeetingReady"}
    stats = await control.stats()
    assert stats["batches"] == 2 + 2 + 1 + 1 and stats["batched_requests"] == 20


async def _script(
    control: EmulatorControl, spec: MeetingSpec, *outcomes: str, retry_after: float | None = None
) -> None:
    """The next creates of this appointment's event meet these outcomes."""
    body: dict[str, Any] = {
        "subject": str(spec.appointment_id),
        "endpoint": "graph.events.create",
        "outcomes": list(outcomes),
        "retry_after_seconds": retry_after,
    }
    await control.http.post("/_emulator/faults/script", json=body)
