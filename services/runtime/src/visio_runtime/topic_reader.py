"""Reading whole topics from outside any consumer group: what ops (`dlq list`, `replay`, `tail`,
`lag`), the proofs and consent's checkpoint reader look at. A reader never joins a group
(joining would make the services' groups rebalance) and never commits.

Several topics are read in one pass of one client: their partitions are listed from metadata
fetched for the purpose, assigned together, each read from its beginning to the end it had
when the read began. Not from the client's `partitions_for_topic`, which answers from cached
metadata — and once a client has been assigned partitions, aiokafka refreshes that cache for
the assigned topics only: a topic read after another was missing from it, so reading topic
after topic skipped all but the first that held anything (`ops dlq list` showed one
dead-letter topic of four).

Where a partition ends is asked of the data itself (`ends`), not only of ListOffsets: tansu
answers ListOffsets with the last batch's first offset + 1, so when several records travel in
one batch (concurrent sends: the outbox relay's waves, dead letters from parallel lanes) the
last of them were left unread, and a lag measured against that end hid them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import TypeAlias

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from visio_runtime.kafka import admin_client, client_kwargs
from visio_runtime.settings import ServiceSettings

Record: TypeAlias = ConsumerRecord[bytes, bytes]


@asynccontextmanager
async def reader(
    settings: ServiceSettings, group_id: str | None = None
) -> AsyncIterator[AIOKafkaConsumer]:
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


async def topic_partitions(settings: ServiceSettings) -> dict[str, list[TopicPartition]]:
    """Every topic the broker has (internal ones aside) → its partitions, as the broker says
    now. Asks for all topics rather than some by name: a broker that creates topics on demand
    would create a topic merely asked about."""
    admin = admin_client(settings)
    try:  # closed even when it never started (no broker)
        await admin.start()
        described = await admin.describe_topics()
    finally:
        await admin.close()
    return {
        topic["topic"]: sorted(
            TopicPartition(topic["topic"], part["partition"]) for part in topic["partitions"]
        )
        for topic in described
        if not topic["topic"].startswith("__") and not topic.get("is_internal")
    }


async def partitions(settings: ServiceSettings, topics: Iterable[str]) -> list[TopicPartition]:
    """The partitions of these topics (none for a topic that does not exist)."""
    known = await topic_partitions(settings)
    return [tp for topic in dict.fromkeys(topics) for tp in known.get(topic, [])]


async def ends(
    consumer: AIOKafkaConsumer, tps: Iterable[TopicPartition], within: float = 30.0
) -> dict[TopicPartition, int]:
    """Each partition's end: the offset after its last record. ListOffsets, then for each
    partition that holds anything, the high watermark of a fetch of its last batch (Apache
    Kafka's two answers agree; tansu's ListOffsets falls short after a batch of several)."""
    every = list(tps)
    listed = await consumer.end_offsets(every)
    found = dict(listed)
    pending = [tp for tp, end in listed.items() if end > 0]
    if not pending:
        return found
    # Every partition asked about, not only those fetched from: the client then keeps the
    # metadata of all their topics, which the caller's next request on them needs. Assigned
    # once: assigning a group's reader anew while its coordinator works on the last
    # assignment fails that coordinator (aiokafka asserts the assignment is still active).
    if consumer.assignment() != set(every):
        consumer.assign(every)
    for tp in pending:
        consumer.seek(tp, listed[tp] - 1)
    async with asyncio.timeout(within):
        while pending:
            await consumer.getmany(*pending, timeout_ms=500)
            for tp in list(pending):
                highwater = consumer.highwater(tp)
                if highwater is not None:
                    found[tp] = max(listed[tp], highwater)
                    pending.remove(tp)
    return found


async def read_range(
    consumer: AIOKafkaConsumer,
    start: dict[TopicPartition, int],
    end: dict[TopicPartition, int],
    within: float = 60.0,
) -> list[Record]:
    """Every record from `start` (included) to `end` (excluded), all partitions at once."""
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


async def read_topics(
    settings: ServiceSettings, topics: Iterable[str], within: float = 60.0
) -> list[Record]:
    """What the topics hold now, in one pass: each partition from its beginning to its end,
    ordered by topic, partition and offset."""
    tps = await partitions(settings, topics)
    if not tps:
        return []
    async with reader(settings) as consumer:
        start = await consumer.beginning_offsets(tps)
        end = await ends(consumer, tps)
        records = await read_range(consumer, start, end, within)
    return sorted(records, key=lambda record: (record.topic, record.partition, record.offset))
