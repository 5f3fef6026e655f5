"""The outbox relay cannot lose or reorder: what is accepted while the broker is down is
published once it is back, in order; one relay is active per database, another takes over;
a row that failed holds back the later rows of its key, and only those."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from visio_booking.outbox import LOCK_KEY, OutboxRelay, PublishFailed, RelaySettings, enqueue
from visio_booking.store import SCHEMA
from visio_fakes.processes import free_port, stop
from visio_fakes.tansu import start_tansu
from visio_runtime.db import migrate, role_dsn
from visio_shared import MeetingFailed


class Gate:
    """A TCP forwarder in front of the broker: closed, the broker is unreachable (connections
    reset, new ones refused), as during a Kafka outage; open again, the broker is back with its
    topics, as Kafka keeps them over a restart. (Restarting tansu instead brought back an empty
    broker, and a relay that reached it before the test had created the topics again had its
    records taken into a topic nobody could read: the test then waited for ever.)"""

    def __init__(self, port: int, target_port: int) -> None:
        self.port, self.target_port = port, target_port
        self.server: asyncio.Server | None = None
        self.live: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self.server = await asyncio.start_server(self._forward, "127.0.0.1", self.port)

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.live):
            writer.transport.abort()
        self.server = None

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.live |= {writer, up_writer}
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self.live -= {writer, up_writer}


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.transport.abort()


async def test_what_is_accepted_while_the_broker_is_down_is_published_in_order_once_it_is_back(
    postgres_url: str, wait_for: Any, start_booking: Any
) -> None:
    gate = Gate(free_port(), free_port())
    broker = start_tansu("127.0.0.1", gate.target_port, advertised_port=gate.port)
    try:
        await gate.open()
        # A short publish timeout shows the outage at once; a copy the producer still held
        # may then be sent twice (at-least-once: consumers skip an event_id seen before).
        booking, close = await start_booking(
            postgres_url, f"127.0.0.1:{gate.port}", outbox_publish_timeout_s=2
        )
    except BaseException:
        if gate.server is not None:
            await gate.close()
        stop(broker)
        raise
    try:
        await gate.close()  # Kafka goes away; booking keeps accepting.
        client, auth = booking.client, booking.auth()
        appointment_id = await booking.book()
        url = f"/v1/appointments/{appointment_id}"
        moved = await client.post(f"{url}/reschedule", json={"duration_minutes": 45}, headers=auth)
        cancelled = await client.post(f"{url}/cancel", json={"reason": "user"}, headers=auth)
        assert (moved.status_code, cancelled.status_code) == (202, 202)

        async def relay_failed() -> bool:
            return booking.runtime.metrics.value("outbox_publish_failures_total") > 0

        await wait_for(relay_failed, 60, "the relay to try and fail")
        pending = await booking.sql("SELECT 1 FROM outbox WHERE published_at IS NULL")
        assert len(pending) == 3, "the rows stay until the broker has them"
        assert booking.runtime.metrics.value("outbox_backlog") == 3
        assert booking.runtime.metrics.value("outbox_oldest_age_seconds") > 0

        await gate.open()  # Kafka is back, its topics with it.
        key = appointment_id.encode()
        records = await booking.records(
            booking.runtime.topics.appointments,
            lambda got: len({json.loads(r.value)["event_id"] for r in got if r.key == key}) >= 3,
            seconds=90,
        )
        events = [json.loads(r.value) for r in records if r.key == key]
        # As a consumer idempotent by event_id sees them: each at its first arrival.
        first_seen = list({e["event_id"]: e for e in events}.values())
        assert [(e["event_type"], e["revision"]) for e in first_seen] == [
            ("AppointmentRequested", 1),
            ("AppointmentRescheduled", 2),
            ("AppointmentCancelled", 3),
        ]

        async def all_marked() -> bool:
            return not await booking.sql("SELECT 1 FROM outbox WHERE published_at IS NULL")

        await wait_for(all_marked, 30, "every row to be marked published")

        async def backlog_cleared() -> bool:
            return booking.runtime.metrics.value("outbox_backlog") == 0

        await wait_for(backlog_cleared, 30, "the backlog gauge to fall back to 0")
    finally:
        await close()
        if gate.server is not None:
            await gate.close()
        stop(broker)


class RecordingPublisher:
    """Records what it is asked to publish; fails the events it is told to, once each."""

    def __init__(self, fail_once: set[str] | None = None) -> None:
        self.calls: list[tuple[str, str]] = []  # (key, event_id)
        self.topics: list[str] = []  # each call's topic
        self.acked: list[tuple[str, str]] = []
        self.fail_once = set(fail_once or ())

    async def publish(
        self, message: bytes, topic: str, *, key: Any = None, headers: Any = None
    ) -> None:
        event_id = json.loads(message)["event_id"]
        self.calls.append((key.decode(), event_id))
        self.topics.append(topic)
        if event_id in self.fail_once:
            self.fail_once.discard(event_id)
            raise ConnectionError("broker unavailable")
        self.acked.append((key.decode(), event_id))


@pytest.fixture
async def outbox_db(fresh_database: str) -> AsyncIterator[str]:
    """A migrated booking schema; yields the service role's connection string."""
    await migrate(fresh_database, SCHEMA, "visio_booking")
    yield role_dsn(fresh_database, "visio_booking", "visio_booking")


def events_for(appointment: uuid.UUID, count: int) -> list[MeetingFailed]:
    return [
        MeetingFailed(
            appointment_id=appointment, revision=n + 1, correlation_id=appointment, reason="x"
        )
        for n in range(count)
    ]


async def add(dsn: str, events: list[MeetingFailed], topic: str = "topic") -> None:
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "booking"})
    try:
        async with conn.transaction():
            for event in events:
                await enqueue(conn, topic, event)
    finally:
        await conn.close()


async def test_a_failed_row_holds_back_its_key_only(outbox_db: str) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    a_events, b_events = events_for(a, 3), events_for(b, 2)
    # Interleaved as two appointments' requests would be.
    await add(outbox_db, [a_events[0], b_events[0], a_events[1], b_events[1], a_events[2]])
    publisher = RecordingPublisher(fail_once={str(a_events[1].event_id)})
    relay = OutboxRelay(outbox_db, publisher, RelaySettings(batch_size=10))
    conn = await asyncpg.connect(outbox_db, server_settings={"search_path": "booking"})
    try:
        with pytest.raises(PublishFailed, match="2 of 5 rows not acknowledged"):
            await relay.publish_batch(conn)
        assert await relay.publish_batch(conn) == 2
        assert await relay.publish_batch(conn) == 0
    finally:
        await conn.close()

    def of(key: uuid.UUID, calls: list[tuple[str, str]]) -> list[str]:
        return [event_id for k, event_id in calls if k == str(key)]

    ids = lambda events: [str(e.event_id) for e in events]  # noqa: E731
    # a's third event was not even tried before its second was acknowledged; b went on.
    assert of(a, publisher.calls) == ids([a_events[0], a_events[1], a_events[1], a_events[2]])
    assert of(a, publisher.acked) == ids(a_events)
    assert of(b, publisher.acked) == ids(b_events)
    assert publisher.acked.index((str(b), ids(b_events)[1])) < publisher.acked.index(
        (str(a), ids(a_events)[1])
    )


async def test_one_relay_is_active_and_another_takes_over_when_it_dies(
    outbox_db: str, fresh_database: str, wait_for: Any
) -> None:
    # A long poll: anything published quickly was woken by NOTIFY.
    settings = RelaySettings(poll_interval_s=60, standby_interval_s=0.1)
    publishers = [RecordingPublisher(), RecordingPublisher()]
    relays = [OutboxRelay(outbox_db, publisher, settings) for publisher in publishers]
    tasks = [asyncio.create_task(relay.run()) for relay in relays]
    owner = await asyncpg.connect(fresh_database)
    try:

        async def one_active() -> OutboxRelay | None:
            active = [relay for relay in relays if relay.active]
            return active[0] if len(active) == 1 else None

        first = await wait_for(one_active, 10, "a relay to take the lock")
        holders = await owner.fetch(
            # Advisory locks are per database: other test databases may hold the same key.
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 1",
            (LOCK_KEY >> 32) & 0xFFFFFFFF,
            LOCK_KEY & 0xFFFFFFFF,
        )
        assert len(holders) == 1

        appointment = uuid.uuid4()
        before = events_for(appointment, 3)
        await add(outbox_db, before)
        second = next(relay for relay in relays if relay is not first)
        first_sent, second_sent = first.publisher.acked, second.publisher.acked

        async def published(sent: list[Any], count: int) -> bool:
            # Acknowledged and marked: a relay killed in between would leave the rows to the
            # next one, which publishes them again (at-least-once), as it should.
            pending = await owner.fetchval(
                "SELECT count(*) FROM booking.outbox WHERE published_at IS NULL"
            )
            return len(sent) == count and pending == 0

        await wait_for(lambda: published(first_sent, 3), 10, "the active relay to publish")
        assert second.publisher.calls == [] and not second.active

        tasks[relays.index(first)].cancel()  # the holder dies; its session ends with it

        async def took_over() -> bool:
            return second.active

        await wait_for(took_over, 10, "the standby to take over")
        after = events_for(appointment, 2)
        await add(outbox_db, after)
        await wait_for(lambda: published(second_sent, 2), 10, "the new relay to publish")
        assert [e for _, e in first_sent] == [str(e.event_id) for e in before]
        assert [e for _, e in second_sent] == [str(e.event_id) for e in after]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await owner.close()


async def test_a_backlog_on_one_topic_does_not_hold_back_another_topics_rows(
    outbox_db: str,
) -> None:
    """One partner's flood of replies waits in the outbox; another partner's reply, written
    after it, goes out in the relay's very next batch, and each key's rows keep their order."""
    flood = [event for _ in range(30) for event in events_for(uuid.uuid4(), 1)]
    await add(outbox_db, flood, topic="replies.flooder")
    steady = events_for(uuid.uuid4(), 2)
    await add(outbox_db, steady, topic="replies.other")
    publisher = RecordingPublisher()
    relay = OutboxRelay(outbox_db, publisher, RelaySettings(batch_size=4))
    conn = await asyncpg.connect(outbox_db, server_settings={"search_path": "booking"})
    try:
        assert await relay.publish_batch(conn) == 4
        # The batch took the two oldest rows of each topic: the other partner's both, in order.
        assert sorted(publisher.topics) == ["replies.flooder"] * 2 + ["replies.other"] * 2
        assert published_to(publisher, "replies.other") == [str(e.event_id) for e in steady]
        while await relay.publish_batch(conn):
            pass
    finally:
        await conn.close()
    assert published_to(publisher, "replies.flooder") == [str(e.event_id) for e in flood]


def published_to(publisher: RecordingPublisher, topic: str) -> list[str]:
    """The event ids published to one topic (none failed here), in the order they were."""
    return [
        event_id
        for called, (_key, event_id) in zip(publisher.topics, publisher.calls, strict=True)
        if called == topic
    ]


async def test_a_relay_stops_when_cancelled_as_a_commit_wakes_it(
    outbox_db: str, wait_for: Any
) -> None:
    """The service stopping while a booking's NOTIFY wakes the relay: the relay must still
    stop. (On Python 3.11, `asyncio.wait_for` returned the wake-up and swallowed the
    cancellation when both came in the same turn of the loop: the relay went on relaying,
    and the service's shutdown waited for it for ever.)"""
    relay = OutboxRelay(outbox_db, RecordingPublisher(), RelaySettings(poll_interval_s=60))
    task = asyncio.create_task(relay.run())
    try:

        async def idle() -> bool:
            # Active, caught up, and waiting to be woken (asyncio.Event keeps its waiters).
            return relay.active and bool(relay._wake._waiters)  # type: ignore[attr-defined]

        await wait_for(idle, 30, "the relay to wait for a commit")
        relay._wake.set()  # a commit's NOTIFY …
        task.cancel()  # … in the very turn the service stops
        done, _ = await asyncio.wait({task}, timeout=10)
        assert task in done, "the relay went on after it was cancelled"
        assert task.cancelled()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
