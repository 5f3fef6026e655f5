"""What the Graph client does when Graph throttles, fails or dawdles: short waits in process
(Retry-After honoured, decimals included), longer ones handed to the consumer, never more
than the limit of requests in flight per mailbox, and every call logged with its ids."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from visio_meetings.graph import GraphClient
from visio_meetings.retries import RetryPolicy, retry_after
from visio_meetings.settings import MeetingsSettings
from visio_runtime.errors import Transient
from visio_runtime.metrics import Metrics
from visio_shared import AppointmentRequested

if TYPE_CHECKING:
    from conftest import Changes, EmulatorControl

ADVISOR = "a1b2c3d4-0000-4000-8000-00000000ad01"
OTHER_ADVISOR = "a1b2c3d4-0000-4000-8000-00000000ad02"

Make = Callable[..., AppointmentRequested]


async def test_a_decimal_retry_after_is_waited_in_process(
    client: GraphClient,
    waits: list[float],
    metrics: Metrics,
    control: EmulatorControl,
    make_appointment: Make,
    changes: type[Changes],
) -> None:
    await control.faults(
        throttle_rate=1.0,
        retry_after_seconds=0.128,
        endpoints=["graph.events.create"],
        max_faults=1,
    )

    created = await client.create_event(changes.spec_of(make_appointment()))

    assert created["onlineMeeting"]["joinUrl"]
    assert waits == [0.128]
    assert (await control.stats())["responses"]["graph.events.create"] == {"429": 1, "201": 1}
    # The calls and the throttling wait show on /metrics.
    assert metrics.value("graph_calls_total", operation="events.create", status="429") == 1
    assert metrics.value("graph_calls_total", operation="events.create", status="201") == 1
    assert metrics.value("graph_throttle_wait_seconds_total", operation="events.create") == 0.128


async def test_a_long_retry_after_goes_back_to_the_consumer(
    client: GraphClient,
    waits: list[float],
    control: EmulatorControl,
    make_appointment: Make,
    changes: type[Changes],
) -> None:
    await control.faults(throttle_rate=1.0, retry_after_seconds=7, endpoints=["graph.events"])

    with pytest.raises(Transient) as caught:
        await client.create_event(changes.spec_of(make_appointment()))

    assert caught.value.retry_after == 7
    assert "429" in str(caught.value)
    assert waits == []  # no sleeping in the consumer's time
    assert await control.calls("graph.events.create") == 1


async def test_503_and_504_are_retried_with_backoff_then_handed_over(
    client: GraphClient,
    waits: list[float],
    settings: MeetingsSettings,
    control: EmulatorControl,
    make_appointment: Make,
    changes: type[Changes],
) -> None:
    await control.faults(gateway_timeout_rate=1.0, endpoints=["graph.events.create"])

    with pytest.raises(Transient, match="504"):
        await client.create_event(changes.spec_of(make_appointment()))

    assert await control.calls("graph.events.create") == settings.graph_attempts
    assert len(waits) == settings.graph_attempts - 1

    await control.faults(unavailable_rate=1.0, retry_after_seconds=0.01, max_faults=2)
    created = await client.create_event(changes.spec_of(make_appointment()))
    assert created["id"]
    assert waits[-2:] == [0.01, 0.01]


def test_backoff_grows_with_jitter_and_is_bounded() -> None:
    policy = RetryPolicy(attempts=4, initial_delay_s=1, max_delay_s=3, max_in_process_wait_s=5)
    for attempt, step in ((1, 1), (2, 2), (3, 3)):
        draws = {policy.backoff(attempt) for _ in range(20)}
        assert all(step / 2 <= d <= step for d in draws)
        assert len(draws) > 1  # jittered
    assert policy.wait_before_next(4, None) is None  # attempts spent
    assert policy.wait_before_next(1, 5.5) is None  # too long a wait for the process
    assert policy.wait_before_next(1, 2.128) == 2.128


def test_retry_after_reads_decimals_seconds_and_http_dates() -> None:
    assert retry_after("2.128") == 2.128
    assert retry_after("12") == 12
    assert retry_after(None) is None
    assert retry_after("soon") is None
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0


async def test_a_graph_timeout_is_transient(
    settings: MeetingsSettings,
    control: EmulatorControl,
    make_appointment: Make,
    changes: type[Changes],
) -> None:
    await control.faults(latency_ms=2000, endpoints=["graph.events.create"])
    quick = settings.model_copy(update={"graph_timeout_s": 0.2, "graph_attempts": 2})
    client = GraphClient.from_settings(quick)
    try:
        with pytest.raises(Transient, match="timed out"):
            await client.create_event(changes.spec_of(make_appointment()))
    finally:
        await client.aclose()
    # Both attempts reached Graph, under one transactionId: one event all the same.
    assert (await control.stats())["events_total"] == 1


async def test_requests_per_mailbox_never_exceed_the_limit_while_others_proceed(
    graph: GraphClient, control: EmulatorControl, make_appointment: Make, changes: type[Changes]
) -> None:
    # Each answer takes a while, so requests pile up behind the limit.
    await control.faults(latency_ms=150, endpoints=["graph.events.create"])
    specs = [
        changes.spec_of(make_appointment(advisor_id=advisor))
        for advisor in (ADVISOR, OTHER_ADVISOR)
        for _ in range(10)
    ]

    await asyncio.gather(*(graph.create_event(spec) for spec in specs))

    stats = await control.stats()
    assert stats["max_in_flight_per_mailbox"] == {ADVISOR: 4, OTHER_ADVISOR: 4}
    assert stats["max_in_flight_total"] == 8  # one advisor's queue never held the other back
    assert stats["concurrency_throttled"] == {}
    assert stats["events_live"] == 20


async def test_every_call_logs_its_client_request_id_and_graphs_request_id(
    graph: GraphClient,
    control: EmulatorControl,
    make_appointment: Make,
    changes: type[Changes],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="visio_meetings.graph")
    spec = changes.spec_of(make_appointment())

    await graph.find_event(ADVISOR, spec.key)
    await graph.create_event(spec)

    uuid = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    lines = [r.getMessage() for r in caplog.records if r.name == "visio_meetings.graph"]
    assert len(lines) == 2
    for line, operation, status in zip(
        lines, ("events.find", "events.create"), (200, 201), strict=True
    ):
        assert re.fullmatch(
            rf"graph {operation}: {status} in \d+ ms \(client-request-id {uuid}, "
            rf"request-id {uuid}\)",
            line,
        ), line
        client_id, graph_id = re.findall(uuid, line)
        assert client_id != graph_id


async def test_application_throttled_from_another_replica_is_waited_out(
    settings: MeetingsSettings,
    control: EmulatorControl,
    make_appointment: Make,
    changes: type[Changes],
) -> None:
    """Two replicas share a mailbox's limit: more than 4 arrive, Graph refuses the excess
    with ApplicationThrottled, and the refused calls wait their Retry-After and go again."""
    await control.faults(latency_ms=60, retry_after_seconds=0.05, endpoints=["graph.events"])
    two_replicas = settings.model_copy(update={"graph_max_concurrent_per_mailbox": 8})
    client = GraphClient.from_settings(two_replicas)
    specs = [changes.spec_of(make_appointment()) for _ in range(8)]
    try:
        created = await asyncio.gather(*(client.create_event(spec) for spec in specs))
    finally:
        await client.aclose()

    assert len({event["id"] for event in created}) == 8
    stats = await control.stats()
    assert stats["concurrency_throttled"][ADVISOR] > 0
    assert stats["responses"]["graph.events.create"]["429"] > 0
    assert stats["events_live"] == 8
