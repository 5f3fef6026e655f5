"""One way to publish an event: key = appointment id, headers from the envelope."""

from __future__ import annotations

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
