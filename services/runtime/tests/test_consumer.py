"""The shared consumption rules, on the real test broker: handled once, unknown types skipped
and counted, poison and exhausted retries dead-lettered with everything needed to replay while
later messages flow, any record that cannot be read (whatever it makes the reading raise)
dead-lettered at once with its reason and its partition committed past it, and a transient
failure held back without letting the same appointment's later events pass it, while other
partitions flow."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import field_validator
from visio_runtime.consumer import EventConsumer
from visio_runtime.errors import Transient
from visio_runtime.kafka import PublishedSeries, ensure_topics
from visio_runtime.metrics import ConsumerMetrics, Metrics
from visio_runtime.service import Runtime, build_runtime
from visio_runtime.settings import ServiceSettings
from visio_runtime.testing import collecting, running, wait_until
from visio_runtime.topic_reader import read_topics
from visio_shared import (
    AppointmentCancelled,
    AppointmentEvent,
    AppointmentRescheduled,
    Headers,
    MeetingFailed,
)

pytestmark = pytest.mark.long  # whole stacks: handed out first (conftest.py)


def settings_for(kafka_bootstrap: str, **overrides: Any) -> ServiceSettings:
    return ServiceSettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"rt-{uuid.uuid4().hex[:8]}",
        **overrides,
    )


@pytest.fixture
async def runtime(kafka_bootstrap: str) -> AsyncIterator[tuple[Runtime, list[Any]]]:
    settings = settings_for(kafka_bootstrap, retry_attempts=3, retry_initial_delay_s=0.01)
    runtime = build_runtime("meetings", settings)
    handled: list[MeetingFailed] = []
    attempts: dict[str, int] = {}

    @runtime.consumer.on(MeetingFailed)
    async def on_failed(event: MeetingFailed) -> None:
        attempts[event.reason] = attempts.get(event.reason, 0) + 1
        if event.reason == "always-broken":
            raise RuntimeError("the handler has a bug")
        if event.reason == "flaky" and attempts[event.reason] < 3:
            raise Transient("peer busy", retry_after=0.01)
        handled.append(event)

    runtime.consumer.subscribe(runtime.topics.meetings)
    async with running(runtime):
        yield runtime, handled


def failed(reason: str) -> MeetingFailed:
    return MeetingFailed(
        appointment_id=uuid.uuid4(), revision=1, correlation_id=uuid.uuid4(), reason=reason
    )


async def read_dead_letters(runtime: Runtime, count: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        runtime.topics.dlq("meetings"),
        bootstrap_servers=runtime.settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        group_id=f"dlq-reader-{uuid.uuid4().hex[:6]}",
    )
    await consumer.start()
    letters: list[Any] = []
    try:
        async with asyncio.timeout(60):
            while len(letters) < count:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    letters.extend(records)
    finally:
        await consumer.stop()
    return letters


async def test_every_kind_of_message_meets_its_fate(runtime: Any) -> None:
    rt, handled = runtime
    topic = rt.topics.meetings
    # One partition, in this order: the poison ones come first, the good ones after them.
    await rt.broker.publish(b"not json", topic, key=b"k1", partition=0, headers={"origin": "test"})
    await rt.broker.publish(b'{"event_type": "SomethingNew"}', topic, key=b"k2", partition=0)
    await rt.broker.publish(
        b'{"event_type": "MeetingFailed", "reason": 3}', topic, key=b"k3", partition=0
    )
    good, flaky, broken = failed("fine"), failed("flaky"), failed("always-broken")
    for event in (broken, good, flaky):
        await rt.broker.publish(
            event.to_json_bytes(), topic, key=b"k", partition=0, headers=Headers.for_event(event)
        )

    letters = await read_dead_letters(rt, 3)
    by_key = {letter.key: letter for letter in letters}
    headers = {key: dict((n, v.decode()) for n, v in by_key[key].headers) for key in by_key}

    assert by_key[b"k1"].value == b"not json"
    assert headers[b"k1"]["origin"] == "test"  # the original headers travel with it
    assert headers[b"k1"]["dlq.source_topic"] == topic
    assert headers[b"k1"]["dlq.source_partition"] == "0"
    assert headers[b"k1"]["dlq.source_offset"] == "0"
    assert headers[b"k1"]["dlq.consumer_group"] == rt.topics.group("meetings")
    assert "not JSON" in headers[b"k1"]["dlq.reason"]
    assert headers[b"k1"]["dlq.first_failed_at"] <= headers[b"k1"]["dlq.dead_lettered_at"]

    assert "appointment_id: Field required" in headers[b"k3"]["dlq.reason"]
    assert "reason: Input should be a valid string" in headers[b"k3"]["dlq.reason"]

    assert headers[b"k"]["dlq.error_class"] == "RuntimeError"
    assert headers[b"k"]["dlq.attempts"] == "3"
    assert "gave up after 3 attempts" in headers[b"k"]["dlq.reason"]
    assert by_key[b"k"].value == broken.to_json_bytes()

    # The messages behind the poison ones flowed: the good, and the flaky after two retries.
    await wait_until(lambda: len(handled) == 2, what="the good and the flaky")
    assert [event.reason for event in handled] == ["fine", "flaky"]
    assert rt.metrics.value("events_skipped_total", event_type="unknown") == 1
    assert rt.metrics.value("events_retried_total", event_type="MeetingFailed") == 4
    assert rt.metrics.value("events_dead_lettered_total", error_class="Unreadable") == 1
    assert rt.metrics.value("events_dead_lettered_total", error_class="ValidationError") == 1
    assert rt.metrics.value("messages_consumed_total", topic=topic) == 6
    assert rt.metrics.value("messages_published_total", topic=rt.topics.dlq("meetings")) == 3


def rescheduled(appointment_id: uuid.UUID, revision: int) -> AppointmentRescheduled:
    start = datetime.now(UTC) + timedelta(days=3)
    return AppointmentRescheduled(
        appointment_id=appointment_id,
        revision=revision,
        correlation_id=uuid.uuid4(),
        start=start,
        duration_minutes=30,
        timezone="Europe/Paris",
        previous_start=start - timedelta(days=1),
        previous_duration_minutes=30,
    )


def cancelled(appointment_id: uuid.UUID, revision: int) -> AppointmentCancelled:
    return AppointmentCancelled(
        appointment_id=appointment_id,
        revision=revision,
        correlation_id=uuid.uuid4(),
        reason="user",
        cancelled_by="test",
    )


@pytest.mark.parametrize("concurrency", [1, 16], ids=["one-at-a-time", "lanes"])
async def test_a_held_back_event_is_not_overtaken_while_other_partitions_flow(
    kafka_bootstrap: str, concurrency: int
) -> None:
    # Many short retries: the held event waits for as long as the test needs, never in place.
    settings = settings_for(
        kafka_bootstrap,
        consumer_concurrency=concurrency,
        topic_partitions=2,
        retry_attempts=1000,
        retry_initial_delay_s=0.02,
        retry_max_delay_s=0.1,
    )
    rt = build_runtime("meetings", settings)
    a, b = uuid.uuid4(), uuid.uuid4()
    handled: list[tuple[uuid.UUID, str, int]] = []
    b_done = asyncio.Event()

    async def handle(event: AppointmentEvent) -> None:
        if event.appointment_id == a and event.event_type == "AppointmentRescheduled":
            if not b_done.is_set():
                raise Transient("Graph answers 503")
        handled.append((event.appointment_id, event.event_type, event.revision))
        if sum(1 for seen in handled if seen[0] == b) == 3:
            b_done.set()

    rt.consumer.on(AppointmentRescheduled)(handle)
    rt.consumer.on(AppointmentCancelled)(handle)
    rt.consumer.subscribe(rt.topics.appointments)
    async with running(rt):
        topic = rt.topics.appointments
        # A's reschedule then its cancellation on partition 0; once the reschedule has failed,
        # B's three changes on partition 1.
        for partition, event in [
            (0, rescheduled(a, 2)),
            (0, cancelled(a, 3)),
            (1, rescheduled(b, 2)),
            (1, rescheduled(b, 3)),
            (1, cancelled(b, 4)),
        ]:
            if event.appointment_id == b and not rt.metrics.value("events_retried_total"):
                await wait_until(
                    lambda: rt.metrics.value("events_retried_total"), what="A's first failure"
                )
            await rt.broker.publish(
                event.to_json_bytes(),
                topic,
                key=str(event.appointment_id).encode(),
                partition=partition,
                headers=Headers.for_event(event),
            )
        await wait_until(lambda: len(handled) == 5, what="all five events")
        assert rt.consumer.state()["held"] == 0

    # B's events flowed while A's reschedule was held back; A's cancellation stayed behind it.
    assert handled == [
        (b, "AppointmentRescheduled", 2),
        (b, "AppointmentRescheduled", 3),
        (b, "AppointmentCancelled", 4),
        (a, "AppointmentRescheduled", 2),
        (a, "AppointmentCancelled", 3),
    ]
    assert rt.metrics.value("events_retried_total", event_type="AppointmentRescheduled") >= 1
    assert rt.metrics.value("events_dead_lettered_total") == 0
    # Every offset is committed: nothing was skipped over, nothing is left behind.
    assert await committed(settings, rt.topics.group("meetings"), topic) == {0: 2, 1: 3}


async def committed(settings: ServiceSettings, group: str, topic: str) -> dict[int, int | None]:
    probe = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
    )
    await probe.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        probe.assign(partitions)
        return {tp.partition: await probe.committed(tp) for tp in partitions}
    finally:
        await probe.stop()


class Unforeseen(MeetingFailed):
    """A contract whose validation raises what nobody planned for, on one input."""

    @field_validator("reason")
    @classmethod
    def _boom(cls, value: str) -> str:
        if value == "boom":
            raise RecursionError("maximum recursion depth exceeded")
        return value


DEEP = b"[" * 1000
EVENT = failed("unreadable").to_json_bytes()
TYPED = [("event_type", b"MeetingFailed")]
# name: (key, value, headers, what its letter's reason says)
UNREADABLE: dict[str, tuple[bytes | None, bytes | None, list[tuple[str, Any]], str]] = {
    "deep, no headers": (None, DEEP, [], "recursion limit exceeded"),
    "deep, declared JSON": (b"k", DEEP, [("content-type", b"application/json")], "recursion"),
    "deep, typed": (b"k", DEEP, TYPED, "Invalid JSON: recursion limit exceeded"),
    "null value, typed": (b"k", None, TYPED, "null record"),
    "null value, no headers": (b"k", None, [], "null record"),
    "byte-order mark": (None, b"\xef\xbb\xbf" + EVENT, [], "byte-order mark"),
    "invalid UTF-8": (None, EVENT.replace(b"unread", b"\xc3\x28"), [], "invalid unicode"),
    "type header not UTF-8": (b"k", EVENT, [("event_type", b"\xff\xfe")], "not an event"),
    "type header without value": (b"k", EVENT, [("event_type", None)], "not an event"),
    "not an event": (None, b"[1, 2]", [], "no event_type header"),
    "huge": (b"k", b'{"x": "' + b"x" * 300_000 + b'"}', TYPED, "appointment_id: Field required"),
    "unforeseen exception": (b"k", failed("boom").to_json_bytes(), TYPED, "RecursionError"),
}


@pytest.mark.parametrize("concurrency", [1, 16], ids=["one-at-a-time", "lanes"])
async def test_a_record_that_cannot_be_read_is_dead_lettered_at_once_and_its_partition_moves_on(
    kafka_bootstrap: str, concurrency: int
) -> None:
    settings = settings_for(
        kafka_bootstrap, consumer_concurrency=concurrency, dlq_max_value_bytes=4096
    )
    rt, handled = collecting("meetings", settings, Unforeseen)
    async with running(rt):
        sender = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers, max_request_size=2**20
        )
        await sender.start()
        try:
            for key, value, headers, _ in UNREADABLE.values():
                await sender.send_and_wait(
                    rt.topics.meetings, value, key=key, headers=headers, partition=0
                )
            good = failed("fine")
            await sender.send_and_wait(
                rt.topics.meetings, good.to_json_bytes(), key=b"k", partition=0
            )
        finally:
            await sender.stop()
        # Behind every one of them, on the same partition, the good event is handled.
        await wait_until(lambda: [event.event_id for event in handled] == [good.event_id])
        letters = await wait_until(
            lambda: _all_letters(rt, len(UNREADABLE)), what="every record's letter"
        )
        await rt.consumer.commit_now()
        assert (await committed(settings, rt.topics.group("meetings"), rt.topics.meetings))[
            0
        ] == len(UNREADABLE) + 1

    by_offset = {int(dict(letter.headers)["dlq.source_offset"]): letter for letter in letters}
    for offset, (name, (key, value, _, reason)) in enumerate(UNREADABLE.items()):
        letter = by_offset[offset]
        headers = {k: v.decode() for k, v in letter.headers}
        assert reason in headers["dlq.reason"], name
        assert headers["dlq.attempts"] == "1", name  # never retried
        assert letter.key == key, name
        if name == "huge":
            assert letter.value == value[:4096] and Headers.DLQ_TRUNCATED in headers
        else:
            assert letter.value == (value or b""), name
    assert rt.metrics.value("events_retried_total") == 0


async def _all_letters(rt: Runtime, count: int) -> list[Any] | None:
    found = await read_topics(rt.settings, [rt.topics.dlq("meetings")])
    return found if len(found) >= count else None


async def test_records_reach_their_handler_without_a_worker_thread(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The consumer's loop stays on the event loop: no thread hand-off per record (FastDepends
    once resolved the handler's message parameter in anyio's worker threads for each one, a
    sixth to a third of a consumer's CPU in the bench profile)."""
    import anyio.to_thread

    handed_to_threads: list[Any] = []
    real_run_sync = anyio.to_thread.run_sync

    async def counting_run_sync(func: Any, *args: Any, **kwargs: Any) -> Any:
        handed_to_threads.append(func)
        return await real_run_sync(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting_run_sync)
    runtime, handled = collecting("meetings", settings_for(kafka_bootstrap), MeetingFailed)
    async with running(runtime):
        for n in range(5):
            event = failed(f"reason {n}")
            await runtime.broker.publish(
                event.to_json_bytes(), runtime.topics.meetings, headers=Headers.for_event(event)
            )
        await wait_until(lambda: len(handled) == 5, what="the five records handled")
    assert handed_to_threads == []


async def test_a_polls_records_come_to_the_lanes_in_one_delivery_in_their_order(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With lanes, FastStream hands over what a poll brought at once (its path for a message —
    middlewares, context, parser — once per poll, not per record), and each appointment's
    records are still handled in the order they were written."""
    deliveries: list[int] = []
    real = EventConsumer.consume

    async def counting(self: EventConsumer, body: Any = None) -> None:
        records = self.broker.context.get_local("message").raw_message
        deliveries.append(len(records) if isinstance(records, tuple) else 1)
        await real(self, body)

    monkeypatch.setattr(EventConsumer, "consume", counting)
    settings = settings_for(kafka_bootstrap, consumer_concurrency=16)
    rt, handled = collecting("meetings", settings, MeetingFailed)
    await ensure_topics(settings, rt.topics.all())
    appointments = [uuid.uuid4() for _ in range(4)]
    sender = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await sender.start()
    try:  # a backlog, written before the consumer starts
        for n in range(200):
            event = failed(f"{n:03d}").model_copy(update={"appointment_id": appointments[n % 4]})
            await sender.send(
                rt.topics.meetings,
                event.to_json_bytes(),
                key=str(event.appointment_id).encode(),
                headers=[(k, v.encode()) for k, v in Headers.for_event(event).items()],
            )
        await sender.flush()
    finally:
        await sender.stop()
    async with running(rt):
        await wait_until(lambda: len(handled) == 200, what="the backlog handled")
    for appointment in appointments:
        reasons = [event.reason for event in handled if event.appointment_id == appointment]
        assert reasons == sorted(reasons) and len(reasons) == 50
    assert sum(deliveries) == 200
    # At most 16 a poll (the lanes' limit): per record, it would be 200 deliveries.
    assert len(deliveries) <= 40, deliveries


def test_a_sources_series_are_looked_up_once_and_counted_where_labels_would() -> None:
    """The consumer counts each record through `ConsumerMetrics.of`: the very series
    `labels()` gives, kept per topic and event type, so what it counts is what is scraped."""
    metrics = Metrics("probe")
    count = ConsumerMetrics(metrics)
    source = count.of("visio.appointments", "AppointmentRequested")
    assert count.of("visio.appointments", "AppointmentRequested") is source
    assert source.consumed is count.consumed.labels("visio.appointments", "AppointmentRequested")
    source.consumed.inc()
    source.handled.inc(2)
    source.skipped.inc(3)
    source.latency.observe(0.2)
    count.of("visio.meetings", "MeetingReady").handled.inc()
    wanted = {"topic": "visio.appointments", "event_type": "AppointmentRequested"}
    assert metrics.value("messages_consumed_total", **wanted) == 1
    assert metrics.value("events_handled_total", **wanted) == 2
    assert metrics.value("events_skipped_total", **wanted) == 3
    assert metrics.value("handler_duration_seconds_count", **wanted) == 1
    assert metrics.value("events_handled_total") == 3


def test_a_published_series_is_looked_up_once_and_counted_where_labels_would() -> None:
    """The broker's middleware counts each message published through `PublishedSeries.of`:
    the very series `labels()` gives, kept per topic and event type."""
    metrics = Metrics("probe")
    published = PublishedSeries(metrics)
    series = published.of("visio.notifications", "NotificationSent")
    assert published.of("visio.notifications", "NotificationSent") is series
    assert series is published.counter.labels(
        topic="visio.notifications", event_type="NotificationSent"
    )
    series.inc(3)
    published.of("visio.meetings", "MeetingReady").inc()
    wanted = {"topic": "visio.notifications", "event_type": "NotificationSent"}
    assert metrics.value("messages_published_total", **wanted) == 3
    assert metrics.value("messages_published_total") == 4
