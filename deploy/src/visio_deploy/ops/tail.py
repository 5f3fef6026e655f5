"""`ops tail TOPIC`: the last messages of a topic, decoded, with their headers — and, with
`--follow`, the new ones as they come. Reads outside any group: it disturbs no consumer."""

from __future__ import annotations

from collections.abc import Callable

from visio_runtime.settings import ServiceSettings
from visio_runtime.topic_reader import partitions, read_range, reader, topic_partitions

from visio_deploy.ops.reading import describe


def resolve(name: str, prefix: str, existing: set[str]) -> str:
    """A topic's full name, or a stream's short one (`appointments`: `<prefix>.appointments.v1`)."""
    if name in existing:
        return name
    for candidate in (f"{prefix}.{name}.v1", f"{prefix}.{name}"):
        if candidate in existing:
            return candidate
    return name


async def tail(
    settings: ServiceSettings,
    topic: str,
    out: Callable[[str], None],
    last: int = 10,
    follow: bool = False,
) -> bool:
    """False if there is no such topic."""
    topic = resolve(topic, settings.topic_prefix, set(await topic_partitions(settings)))
    tps = await partitions(settings, [topic])
    if not tps:
        return False
    async with reader(settings) as consumer:
        end = await consumer.end_offsets(tps)
        beginning = await consumer.beginning_offsets(tps)
        start = {tp: max(beginning[tp], end[tp] - last) for tp in tps}
        records = await read_range(consumer, start, end)
        for record in sorted(records, key=lambda record: (record.timestamp, record.offset)):
            out(describe(record))
        if follow:
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, end[tp])
            while True:
                for found in (await consumer.getmany(timeout_ms=1000)).values():
                    for record in found:
                        out(describe(record))
    return True
