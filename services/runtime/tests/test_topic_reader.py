"""Reading whole topics on the real broker: several topics in one pass return every record of
every partition, and records sent together in one batch are all read and all counted in the
partition's end — tansu's ListOffsets answers the last batch's first offset + 1, which left the
batch's later records unread and out of any lag."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaProducer
from visio_runtime.kafka import ensure_topics
from visio_runtime.settings import ServiceSettings
from visio_runtime.topic_reader import ends, partitions, read_topics, reader


async def test_several_topics_are_read_whole_in_one_pass(kafka_bootstrap: str) -> None:
    settings = ServiceSettings(
        kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=f"read-{uuid.uuid4().hex[:8]}"
    )
    names = [f"{settings.topic_prefix}.{n}.dlq" for n in ("a", "b", "c", "d")]
    await ensure_topics(settings, names)
    sender = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await sender.start()
    try:
        # Sent without waiting for each: they travel in batches of several records.
        pending = [
            await sender.send(name, f"{name}/{n}".encode(), key=str(n % 7).encode())
            for name in names[:3]
            for n in range(40)
        ]
        await asyncio.gather(*pending)
    finally:
        await sender.stop()

    found = await read_topics(settings, [*names, f"{settings.topic_prefix}.missing"])

    assert sorted(record.value for record in found) == sorted(
        f"{name}/{n}".encode() for name in names[:3] for n in range(40)
    )
    assert found == sorted(found, key=lambda r: (r.topic, r.partition, r.offset))
    tps = await partitions(settings, names)
    assert len(tps) == 4 * settings.topic_partitions
    async with reader(settings) as consumer:
        assert sum((await ends(consumer, tps)).values()) == 120
