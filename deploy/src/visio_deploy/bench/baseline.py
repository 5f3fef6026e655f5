"""The broker's own limit on this machine, measured in the same run: raw aiokafka producing and
then consuming 1 KB messages on a topic of the bench's, with the producer settings the services
use (acks=all) and no work per message."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from visio_runtime.kafka import client_kwargs, ensure_topics
from visio_runtime.settings import ServiceSettings
from visio_runtime.topic_reader import partitions


@dataclass(frozen=True)
class Baseline:
    messages: int
    produce_per_s: float
    consume_per_s: float


async def measure(settings: ServiceSettings, messages: int) -> Baseline:
    topic = f"{settings.topic_prefix}.bench-baseline.v1"
    await ensure_topics(settings, [topic])
    payload = os.urandom(512).hex().encode()  # 1 KB that does not compress
    producer = AIOKafkaProducer(acks="all", **client_kwargs(settings))
    await producer.start()
    try:
        started = time.perf_counter()
        pending = [
            await producer.send(topic, payload, key=str(n % 1000).encode()) for n in range(messages)
        ]
        await asyncio.gather(*pending)
        produced_s = time.perf_counter() - started
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        enable_auto_commit=False, auto_offset_reset="earliest", **client_kwargs(settings)
    )
    await consumer.start()
    try:
        tps = await partitions(settings, [topic])
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        started = time.perf_counter()
        while seen < messages:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            seen += sum(len(records) for records in batches.values())
        consumed_s = time.perf_counter() - started
    finally:
        await consumer.stop()
    return Baseline(messages, messages / produced_s, messages / consumed_s)
