"""What /health/ready and /metrics say about a service's consumers (visio_runtime.consumer):
the partitions they hold, how many are held back for a retry, and each partition's lag."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faststream.kafka import KafkaBroker

from visio_runtime.lanes import Lanes
from visio_runtime.metrics import ConsumerMetrics


def consumers(broker: KafkaBroker) -> Iterator[AIOKafkaConsumer]:
    for subscriber in broker.subscribers:
        consumer = getattr(subscriber, "consumer", None)
        if isinstance(consumer, AIOKafkaConsumer):
            yield consumer


def assignment(broker: KafkaBroker) -> set[TopicPartition]:
    """Every partition the service's consumers hold now, across their groups."""
    return {tp for consumer in consumers(broker) for tp in consumer.assignment()}


def state(broker: KafkaBroker, lanes: Lanes | None) -> dict[str, Any]:
    """'assigned' (with its partitions and how many are held back) or 'waiting' for the
    group to assign some; 'none' for a service that consumes nothing."""
    if not broker.subscribers:
        return {"state": "none"}
    assigned = [tp for consumer in consumers(broker) for tp in consumer.assignment()]
    held = sum(len(consumer.paused()) for consumer in consumers(broker))
    if lanes is not None:
        held += lanes.waiting_to_retry
    return {
        "state": "assigned" if assigned else "waiting",
        "partitions": len(assigned),
        "held": held,
    }


async def observe(broker: KafkaBroker, lanes: Lanes | None, count: ConsumerMetrics) -> None:
    """Refresh the consumer gauges (called when /metrics is read): lag is the partition's
    end as last fetched (its highwater) minus the consumer's own position."""
    count.lag.clear()
    assigned = held = 0
    for consumer in consumers(broker):
        partitions = consumer.assignment()
        assigned += len(partitions)
        held += len(consumer.paused())
        for tp in partitions:
            end = consumer.highwater(tp)  # None until the partition's first fetch
            if end is None:
                continue
            try:  # a partition being reset has no position yet: no sample this time
                async with asyncio.timeout(1):
                    position = await consumer.position(tp)
            except TimeoutError:
                continue
            lag = max(end - position, 0)
            count.lag.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)
    if lanes is not None:
        held += lanes.waiting_to_retry
    count.assigned.set(assigned)
    count.held.set(held)
