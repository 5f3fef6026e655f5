"""Reading topics from outside any consumer group: ops looks, it never joins a group (joining
would make the services' groups rebalance) and never commits."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeAlias

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from visio_runtime.kafka import client_kwargs
from visio_runtime.settings import ServiceSettings
from visio_shared import Headers

Record: TypeAlias = ConsumerRecord[bytes, bytes]


@asynccontextmanager
async def reader(settings: ServiceSettings, group_id: str | None = None) -> AsyncIterator[Any]:
    """A consumer that is only ever assigned partitions by hand. With `group_id`, it can read
    that group's committed offsets (`committed()`) without joining the group."""
    consumer = AIOKafkaConsumer(
        group_id=group_id, enable_auto_commit=False, **client_kwargs(settings)
    )
    try:  # stopped even when it never started (no broker): no "Unclosed" warning then
        await consumer.start()
        yield consumer
    finally:
        await consumer.stop()


@asynccontextmanager
async def producer(settings: ServiceSettings) -> AsyncIterator[AIOKafkaProducer]:
    sender = AIOKafkaProducer(
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        **client_kwargs(settings),
    )
    await sender.start()
    try:
        yield sender
    finally:
        await sender.stop()


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    await consumer.topics()  # refreshes the metadata partitions_for_topic reads
    found = consumer.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, partition) for partition in sorted(found)]


async def read_range(
    consumer: AIOKafkaConsumer,
    start: dict[TopicPartition, int],
    end: dict[TopicPartition, int],
    within: float = 60.0,
) -> list[Record]:
    """Every record from `start` (included) to `end` (excluded), partition by partition."""
    pending = [tp for tp in start if start[tp] < end[tp]]
    if not pending:
        return []
    consumer.assign(pending)
    for tp in pending:
        consumer.seek(tp, start[tp])
    records: list[Record] = []
    async with asyncio.timeout(within):
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=500)
            for tp, found in batch.items():
                records.extend(record for record in found if record.offset < end[tp])
            pending = [tp for tp in pending if await consumer.position(tp) < end[tp]]
    return records


async def read_topic(consumer: AIOKafkaConsumer, topic: str) -> list[Record]:
    """What the topic holds now, from each partition's beginning to its end."""
    tps = await partitions_of(consumer, topic)
    if not tps:
        return []
    start = await consumer.beginning_offsets(tps)
    end = await consumer.end_offsets(tps)
    return await read_range(consumer, start, end)


def headers_of(record: Record) -> dict[str, str]:
    return Headers.decode(record.headers)


def when(record: Record) -> str:
    return datetime.fromtimestamp(record.timestamp / 1000, UTC).isoformat(timespec="seconds")


def describe(record: Record) -> str:
    """A record as a person reads it: where it is, when, its key and headers, its value."""
    key = record.key.decode("utf-8", "replace") if record.key is not None else "-"
    lines = [f"{record.topic} [{record.partition}] @{record.offset}  {when(record)}  key={key}"]
    lines += [f"  {name}: {value}" for name, value in sorted(headers_of(record).items())]
    lines.append(_indent(pretty(record.value)))
    return "\n".join(lines)


def pretty(value: bytes | None) -> str:
    if value is None:
        return "(no value)"
    try:
        return json.dumps(json.loads(value), indent=2, ensure_ascii=False, sort_keys=True)
    except ValueError:
        return repr(value)


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines())
