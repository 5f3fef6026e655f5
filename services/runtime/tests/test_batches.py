"""Batch handlers on the real test broker and PostgreSQL: events travel together (one transaction
for many), yet a poison record in a batch is dead-lettered alone while its neighbours are
handled once; a transient failure holds back only its own record and its partition's commit;
a crash between a batch's commit and the offsets' leaves the events to be redelivered, and the
redelivery doubles nothing; and one appointment's many events in one poll stay in order, never
two of them in one batch."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from visio_runtime.db import create_pool, mark_processed_many
from visio_runtime.errors import Poison, Transient
from visio_runtime.kafka import ensure_topics
from visio_runtime.service import Runtime, build_runtime
from visio_runtime.settings import ServiceSettings
from visio_runtime.testing import running, wait_until
from visio_shared import AppointmentEvent, Headers, MeetingFailed

from .test_consumer import committed, failed, read_dead_letters, settings_for

pytestmark = pytest.mark.long  # whole stacks: handed out first (conftest.py)

TABLES = """
CREATE TABLE processed_events (event_id uuid PRIMARY KEY, event_type text NOT NULL);
CREATE TABLE effects (event_id uuid PRIMARY KEY, appointment_id uuid NOT NULL, reason text);
CREATE TABLE outbox (id bigserial PRIMARY KEY, event_id uuid NOT NULL);
"""


@pytest.fixture
async def pool(fresh_database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(fresh_database, schema="public")
    await pool.execute(TABLES)
    try:
        yield pool
    finally:
        await pool.close()


async def write_batch(
    pool: asyncpg.Pool, events: list[MeetingFailed], fail: Callable[[], None] = lambda: None
) -> set[uuid.UUID]:
    """What a batch handler does: markers, effects and outbox rows, set-wise, in one
    transaction; the ids it applied (the others were redelivered). `fail` raises, or not,
    once everything is written, before the commit."""
    async with pool.acquire() as conn, conn.transaction():
        fresh = await mark_processed_many(conn, events)
        new = [event for event in events if event.event_id in fresh]
        await conn.execute(
            "INSERT INTO effects SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[])",
            [event.event_id for event in new],
            [event.appointment_id for event in new],
            [event.reason for event in new],
        )
        await conn.execute(
            "INSERT INTO outbox (event_id) SELECT unnest($1::uuid[])",
            [event.event_id for event in new],
        )
        fail()
    return fresh


async def publish_all(rt: Runtime, events: list[MeetingFailed], partition: int = 0) -> None:
    """Sent at once, so they travel in one produce batch and arrive in one fetch."""
    await asyncio.gather(
        *(
            rt.broker.publish(
                event.to_json_bytes(),
                rt.topics.meetings,
                key=str(event.appointment_id).encode(),
                partition=partition,
                headers=Headers.for_event(event),
            )
            for event in events
        )
    )


def batch_settings(kafka_bootstrap: str, **overrides: Any) -> ServiceSettings:
    defaults: dict[str, Any] = {
        "topic_partitions": 1,
        "consumer_batch_window_ms": 100,
        "retry_initial_delay_s": 0.02,
        "retry_max_delay_s": 0.05,
    }
    return settings_for(kafka_bootstrap, **{**defaults, **overrides})


def batch_runtime(
    settings: ServiceSettings, handle: Callable[[list[MeetingFailed]], Awaitable[None]]
) -> Runtime:
    rt = build_runtime("meetings", settings)
    rt.consumer.on_batch(MeetingFailed)(handle)
    rt.consumer.subscribe(rt.topics.meetings)
    return rt


async def count(pool: asyncpg.Pool, table: str) -> int:
    found: int = await pool.fetchval(f"SELECT count(*) FROM {table}")
    return found


async def test_a_poison_record_is_dead_lettered_alone_and_its_neighbours_are_handled_once(
    kafka_bootstrap: str, pool: asyncpg.Pool
) -> None:
    settings = batch_settings(kafka_bootstrap)
    sizes: list[int] = []

    async def handle(events: list[MeetingFailed]) -> None:
        sizes.append(len(events))

        def refuse_poison() -> None:
            if any(event.reason == "poison" for event in events):
                raise Poison("this reason is never accepted")

        await write_batch(pool, events, refuse_poison)

    rt = batch_runtime(settings, handle)
    events = [failed(f"fine-{n}") for n in range(30)]
    events[13] = failed("poison")
    async with running(rt):
        await publish_all(rt, events)
        letters = await read_dead_letters(rt, 1)
        await wait_until(lambda: rt.metrics.value("events_handled_total") == 29, what="the 29")
        await rt.consumer.commit_now()
        assert await committed(settings, rt.topics.group("meetings"), rt.topics.meetings) == {0: 30}

    assert [letter.value for letter in letters] == [events[13].to_json_bytes()]
    reason = dict(letters[0].headers)["dlq.reason"].decode()
    assert reason == "this reason is never accepted"
    assert dict(letters[0].headers)["dlq.source_offset"] == b"13"
    # Every neighbour's effect and outbox row once; nothing of the poison one.
    rows = await pool.fetch("SELECT event_id, reason FROM effects")
    assert sorted(row["event_id"] for row in rows) == sorted(
        event.event_id for n, event in enumerate(events) if n != 13
    )
    assert await count(pool, "outbox") == 29
    assert await count(pool, "processed_events") == 29
    assert max(sizes) > 1, "the events travelled together"
    assert rt.metrics.value("events_dead_lettered_total", error_class="Poison") == 1


async def test_a_transient_failure_holds_back_its_record_and_its_partition_commit_only(
    kafka_bootstrap: str, pool: asyncpg.Pool
) -> None:
    settings = batch_settings(kafka_bootstrap, topic_partitions=2, retry_attempts=1000)
    release = asyncio.Event()
    tries: list[int] = []

    async def handle(events: list[MeetingFailed]) -> None:
        def fail_over() -> None:
            if any(event.reason == "flaky" for event in events) and not release.is_set():
                tries.append(len(events))
                raise Transient("the database is failing over")

        await write_batch(pool, events, fail_over)

    rt = batch_runtime(settings, handle)
    first = [failed(f"p0-{n}") for n in range(10)]
    first[4] = failed("flaky")
    second = [failed(f"p1-{n}") for n in range(10)]
    topic = rt.topics.meetings
    group = rt.topics.group("meetings")
    async with running(rt):
        await publish_all(rt, first, partition=0)
        await publish_all(rt, second, partition=1)
        await wait_until(lambda: rt.metrics.value("events_handled_total") == 19, what="the 19")
        await wait_until(lambda: len(tries) > 3 and tries[-1] == 1, what="retries of one alone")
        await rt.consumer.commit_now()
        # Partition 1 done; partition 0's commit waits at the flaky record, the rest of it done.
        assert await committed(settings, group, topic) == {0: 4, 1: 10}
        await wait_until(lambda: rt.consumer.state()["held"] == 1, what="the record held")
        release.set()
        await wait_until(lambda: rt.metrics.value("events_handled_total") == 20, what="all")
        await rt.consumer.commit_now()
        assert await committed(settings, group, topic) == {0: 10, 1: 10}

    assert await count(pool, "effects") == 20
    assert await count(pool, "outbox") == 20
    assert rt.metrics.value("events_dead_lettered_total") == 0


async def test_a_crash_between_the_batch_commit_and_the_offsets_redelivers_and_doubles_nothing(
    kafka_bootstrap: str, pool: asyncpg.Pool
) -> None:
    # Batches all in flight at once, however the twenty arrive: none waits behind a hung one.
    settings = batch_settings(kafka_bootstrap, consumer_batch_parallel=20)
    events = [failed(f"crash-{n}") for n in range(20)]
    crashing: list[asyncio.Task[Any]] = []
    written: list[uuid.UUID] = []

    async def commit_then_die(batch: list[MeetingFailed]) -> None:
        written.extend(await write_batch(pool, batch))
        # Committed in PostgreSQL; the process dies before the offsets are.
        task = asyncio.current_task()
        assert task is not None
        crashing.append(task)
        await asyncio.Event().wait()

    first = batch_runtime(settings, commit_then_die)
    # Started by hand (not `running`), to be stopped below as a crash leaves it.
    await ensure_topics(settings, first.topics.all())
    await first.broker.start()
    await wait_until(lambda: first.consumer.state()["state"] == "assigned", what="assignment")
    await publish_all(first, events)
    await wait_until(lambda: len(written) == 20, what="every event committed in PostgreSQL")
    for task in crashing:
        task.cancel()
    await first.consumer.drain(timeout_s=5)
    await first.broker.stop()
    group, topic = first.topics.group("meetings"), first.topics.meetings
    assert await committed(settings, group, topic) == {0: None}

    redelivered: list[uuid.UUID] = []

    async def handle(batch: list[MeetingFailed]) -> None:
        redelivered.extend(event.event_id for event in batch)
        assert await write_batch(pool, batch) == set(), "every marker was already there"

    second = batch_runtime(settings, handle)
    async with running(second):
        await wait_until(lambda: len(redelivered) == 20, what="the redelivery")
        await second.consumer.commit_now()
        assert await committed(settings, group, topic) == {0: 20}

    assert sorted(redelivered) == sorted(event.event_id for event in events)
    assert await count(pool, "effects") == 20
    assert await count(pool, "outbox") == 20


async def test_one_appointments_many_events_in_one_poll_keep_their_order_one_per_batch(
    kafka_bootstrap: str,
) -> None:
    settings = batch_settings(kafka_bootstrap, consumer_batch_window_ms=20)
    keys = [uuid.uuid4() for _ in range(8)]
    batches: list[list[tuple[uuid.UUID, int]]] = []

    async def handle(events: list[MeetingFailed]) -> None:
        batches.append([(event.appointment_id, event.revision) for event in events])
        await asyncio.sleep(0.005)  # handling time: the next batch fills meanwhile

    rt = batch_runtime(settings, handle)
    # Every appointment's twelve revisions, interleaved on one partition, sent in one go.
    events = [
        MeetingFailed(
            appointment_id=key, revision=revision, correlation_id=key, reason=f"r{revision}"
        )
        for revision in range(1, 13)
        for key in keys
    ]
    async with running(rt):
        await publish_all(rt, events)
        await wait_until(lambda: sum(map(len, batches)) == len(events), what="every event")

    for batch in batches:
        assert len({key for key, _ in batch}) == len(batch), "two events of a key in one batch"
    for key in keys:
        revisions = [revision for batch in batches for seen, revision in batch if seen == key]
        assert revisions == list(range(1, 13))
    assert max(map(len, batches)) > 1


async def test_with_one_record_at_a_time_a_batch_handler_gets_batches_of_one(
    kafka_bootstrap: str,
) -> None:
    settings = batch_settings(kafka_bootstrap, consumer_concurrency=1)
    batches: list[list[AppointmentEvent]] = []

    async def handle(events: list[MeetingFailed]) -> None:
        batches.append(list(events))

    rt = batch_runtime(settings, handle)
    async with running(rt):
        await publish_all(rt, [failed("one"), failed("two")])
        await wait_until(lambda: len(batches) == 2, what="both")
    assert [len(batch) for batch in batches] == [1, 1]


async def test_clients_reading_separately_each_have_a_group_of_their_own(
    kafka_bootstrap: str,
) -> None:
    # Two clients of one process in one group made tansu rebalance it again and again.
    settings = settings_for(kafka_bootstrap, topic_partitions=2)
    rt = build_runtime("notifications", settings)
    seen: list[str] = []

    async def handle(events: list[MeetingFailed]) -> None:
        seen.extend(event.reason for event in events)

    rt.consumer.on_batch(MeetingFailed)(handle)
    rt.consumer.subscribe(rt.topics.appointments, rt.topics.meetings, separately=True)
    groups = sorted(subscriber.group_id for subscriber in rt.broker.subscribers)
    base = rt.topics.group("notifications")
    assert groups == [f"{base}.appointments.v1", f"{base}.meetings.v1"]
    async with running(rt):
        await wait_until(lambda: rt.consumer.state()["partitions"] == 4, what="all four")
        for topic in (rt.topics.appointments, rt.topics.meetings):
            event = failed(topic)
            await rt.broker.publish(
                event.to_json_bytes(),
                topic,
                key=str(event.appointment_id).encode(),
                headers=Headers.for_event(event),
            )
        await wait_until(lambda: len(seen) == 2, what="an event from each topic")
        # Settled: every partition stays held, no rebalance takes any away.
        for _ in range(40):
            assert rt.consumer.state()["partitions"] == 4
            await asyncio.sleep(0.1)
        await rt.consumer.commit_now()
        assert await committed(settings, f"{base}.meetings.v1", rt.topics.meetings) in (
            {0: 1, 1: None},
            {0: None, 1: 1},
        )
