"""`ops topics` (partitions, end offsets, message rate; undeclared topics flagged) and `ops lag`
(per consumer group and partition, committed offset against end offset).

Lag is read with a consumer named after the group but assigned partitions by hand: it asks the
group coordinator for committed offsets (OffsetFetch) without ever joining the group, so the
services' consumers are not made to rebalance. That also works on tansu, which lacks the admin
API's list_consumer_group_offsets."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiokafka import TopicPartition
from visio_runtime.kafka import admin_client
from visio_runtime.settings import ServiceSettings
from visio_runtime.topic_reader import ends, partitions, reader, topic_partitions

from visio_deploy.ops.topology import declared_topics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicRow:
    topic: str
    partitions: int
    messages: int  # what the topic holds now: end offsets minus beginning offsets
    end_offsets: dict[int, int]
    rate: float | None  # messages per second over the sample; None without a sample
    declared: bool


async def topics_report(settings: ServiceSettings, sample_s: float = 2.0) -> list[TopicRow]:
    tps = await topic_partitions(settings)
    declared = declared_topics(settings.topic_prefix, tps)
    names = sorted(tps)
    async with reader(settings) as consumer:
        every = [tp for found in tps.values() for tp in found]
        first = await ends(consumer, every)
        if sample_s > 0:
            await asyncio.sleep(sample_s)  # the sample the rate is measured over
        end = await ends(consumer, every)
        beginning = await consumer.beginning_offsets(every) if every else {}
    rows = []
    for name in names:
        parts = tps[name]
        rows.append(
            TopicRow(
                topic=name,
                partitions=len(parts),
                messages=sum(end[tp] - beginning[tp] for tp in parts),
                end_offsets={tp.partition: end[tp] for tp in parts},
                rate=sum(end[tp] - first[tp] for tp in parts) / sample_s if sample_s > 0 else None,
                declared=name in declared,
            )
        )
    return rows


@dataclass(frozen=True)
class LagRow:
    group: str
    topic: str
    partition: int
    committed: int | None  # None: the group never committed on this partition
    end: int
    lag: int


async def group_lag(settings: ServiceSettings, group: str, topics: list[str]) -> list[LagRow]:
    tps = await partitions(settings, topics)
    if not tps:
        return []
    async with reader(settings, group_id=group) as consumer:
        consumer.assign(tps)
        end = await ends(consumer, tps)
        beginning = await consumer.beginning_offsets(tps)
        rows = []
        for tp in tps:
            committed = await consumer.committed(tp)
            # Nothing committed: the group will start from the beginning (earliest).
            position = committed if committed is not None else beginning[tp]
            rows.append(
                LagRow(group, tp.topic, tp.partition, committed, end[tp], end[tp] - position)
            )
    return rows


async def lag_report(settings: ServiceSettings, groups: dict[str, list[str]]) -> list[LagRow]:
    """The lag of the given groups on their topics, and of any other group the broker lists
    (Apache Kafka does; tansu lists none)."""
    rows = [
        row for group, topics in groups.items() for row in await group_lag(settings, group, topics)
    ]
    for group, offsets in (await _other_groups(settings, set(groups))).items():
        async with reader(settings) as consumer:
            end = await ends(consumer, offsets)
        rows += [
            LagRow(group, tp.topic, tp.partition, offset, end[tp], end[tp] - offset)
            for tp, offset in sorted(offsets.items())
        ]
    return rows


async def _other_groups(
    settings: ServiceSettings, known: set[str]
) -> dict[str, dict[TopicPartition, int]]:
    admin = admin_client(settings)
    await admin.start()
    try:
        listed = [entry[0] for entry in await admin.list_consumer_groups()]
        found = {}
        for group in sorted(set(listed) - known):
            offsets = await admin.list_consumer_group_offsets(group)
            found[group] = {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
        return found
    except Exception as exc:  # a broker without these admin APIs: declared groups only
        log.info("the broker does not list consumer groups (%s)", type(exc).__name__)
        return {}
    finally:
        await admin.close()
