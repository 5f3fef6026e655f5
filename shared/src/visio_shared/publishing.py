"""One way to publish an event: key = appointment id, headers from the envelope."""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import Any, Protocol

from visio_shared.envelope import Envelope
from visio_shared.headers import Headers, event_key


class Publisher(Protocol):
    """What a FastStream `KafkaBroker` offers (and any test double of it)."""

    async def publish(
        self,
        message: Any,
        topic: str,
        *,
        key: bytes | None = ...,
        headers: dict[str, str] | None = ...,
    ) -> Any: ...


async def publish_event(publisher: Publisher, topic: str, event: Envelope) -> None:
    await publisher.publish(
        event.to_json_bytes(),
        topic,
        key=event_key(event),
        headers=Headers.for_event(event),
    )


async def publish_events(publisher: Publisher, topic: str, events: Iterable[Envelope]) -> None:
    """Publish many events as one produce batch: sent together (the client gathers what is
    sent at once into one request per partition) and awaited together, in waves of one event
    per key, so one appointment's events still reach the topic in their order. Raises the
    first failure once every send of its wave is over (what was sent stays sent)."""
    queues: OrderedDict[bytes, deque[Envelope]] = OrderedDict()
    for event in events:
        queues.setdefault(event_key(event), deque()).append(event)
    while queues:
        wave = [queue.popleft() for queue in queues.values()]
        queues = OrderedDict((key, queue) for key, queue in queues.items() if queue)
        results = await asyncio.gather(
            *(publish_event(publisher, topic, event) for event in wave), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
