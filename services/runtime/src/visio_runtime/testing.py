"""Helpers for tests that run a runtime on a real broker: start it and wait for its group to
assign it partitions, and wait for a condition with a deadline rather than sleeping."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import ConsumerRecord
from visio_shared import AppointmentEvent, Headers

from visio_runtime.kafka import ensure_topics, start_broker
from visio_runtime.service import Runtime, build_runtime
from visio_runtime.settings import ServiceSettings

T = TypeVar("T")

POLL_S = 0.05  # how often a condition is checked: a deadline, not a sleep, bounds the wait


async def wait_until(
    condition: Callable[[], T | Awaitable[T]], within: float = 60.0, what: str = "a condition"
) -> T:
    """Poll `condition` until it returns something truthy; that value is returned."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(POLL_S)


@dataclass(frozen=True)
class Published:
    message: Any
    topic: str
    key: bytes | None
    headers: dict[str, str] | None


class RecordingPublisher:
    """Stands in for the Kafka broker in handler tests: records every publish."""

    def __init__(self) -> None:
        self.calls: list[Published] = []

    async def publish(
        self,
        message: Any,
        topic: str,
        *,
        key: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.calls.append(Published(message, topic, key, headers))


@asynccontextmanager
async def running(runtime: Runtime, within: float = 60.0) -> AsyncIterator[Runtime]:
    """The runtime's topics created and its broker started, once its consumer is assigned."""
    await ensure_topics(runtime.settings, runtime.topics.all())
    await start_broker(runtime.broker)
    try:
        await wait_until(
            lambda: runtime.consumer.state()["state"] != "waiting", within, "an assignment"
        )
        yield runtime
    finally:
        await runtime.consumer.drain()
        await runtime.broker.stop()


def record_of(
    event: AppointmentEvent, topic: str, offset: int = 0, partition: int = 0
) -> ConsumerRecord[bytes, bytes]:
    """The Kafka record a consumer would receive for `event`: keyed by its appointment, with
    the event's headers — for tests that hand records to `EventConsumer.process`."""
    value = event.to_json_bytes()
    key = str(event.appointment_id).encode()
    return ConsumerRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key),
        serialized_value_size=len(value),
        headers=[(name, v.encode()) for name, v in Headers.for_event(event).items()],
    )


def collecting(
    service: str, settings: ServiceSettings, event_type: type[Any]
) -> tuple[Runtime, list[Any]]:
    """A runtime of `service` reading `meetings.v1`, whose handler keeps each `event_type` it
    is given, in the order handled."""
    runtime = build_runtime(service, settings)
    handled: list[Any] = []

    @runtime.consumer.on(event_type)
    async def keep(event: Any) -> None:
        handled.append(event)

    runtime.consumer.subscribe(runtime.topics.meetings)
    return runtime, handled
