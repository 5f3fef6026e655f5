"""A handler's produce wave fits the producer's batches (`kafka_producer_batch_bytes`): the
events of a batch, sent at once (visio_shared.publish_events), are appended to the partitions'
batches without one of them waiting for a batch to drain — on the real broker, every event
arriving. With aiokafka's 16 KB batches, most of a wave waited, woke and retried."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.producer.message_accumulator import MessageBatch
from visio_runtime.kafka import ensure_topics, make_broker, start_broker
from visio_runtime.settings import ServiceSettings
from visio_shared import Headers, MeetingFailed, Topics, publish_events

WAVE = 1_200  # a consent batch of 500 appointments publishes about 1,000 events


async def _publish_wave(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch, **changes: Any
) -> tuple[int, list[str]]:
    """(times a sender waited for a full batch to drain, event ids read back from the topic)."""
    settings = ServiceSettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"wave-{uuid.uuid4().hex[:8]}",
        **changes,
    )
    topic = Topics(settings.topic_prefix).meetings
    await ensure_topics(settings, [topic])
    waits = 0
    wait_drain = MessageBatch.wait_drain

    async def counted(self: MessageBatch, timeout: float | None = None) -> None:  # noqa: ASYNC109
        nonlocal waits
        waits += 1
        await wait_drain(self, timeout)

    monkeypatch.setattr(MessageBatch, "wait_drain", counted)
    events = [
        MeetingFailed(
            appointment_id=uuid.uuid4(), revision=1, correlation_id=uuid.uuid4(), reason="x" * 200
        )
        for _ in range(WAVE)
    ]
    broker = make_broker(settings, client_id="wave-test")
    await start_broker(broker)
    try:
        await publish_events(broker, topic, events)
    finally:
        await broker.stop()
    reader = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest"
    )
    await reader.start()
    read: list[str] = []
    try:
        while len(read) < WAVE:
            fetched = await reader.getmany(timeout_ms=2_000)
            if not fetched:
                break
            for records in fetched.values():
                read += [Headers.decode(r.headers)[Headers.EVENT_ID] for r in records]
    finally:
        await reader.stop()
    assert sorted(read) == sorted(str(event.event_id) for event in events)
    return waits, read


async def test_a_wave_of_events_is_appended_without_waiting_for_a_batch_to_drain(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits, read = await _publish_wave(kafka_bootstrap, monkeypatch)
    assert waits == 0
    assert len(read) == WAVE


async def test_with_aiokafkas_default_batches_the_same_wave_waits(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check above, on the setting that made the cost: it sees the waits."""
    waits, read = await _publish_wave(
        kafka_bootstrap, monkeypatch, kafka_producer_batch_bytes=16 * 1024
    )
    assert waits > 100
    assert len(read) == WAVE
