"""Reading a consumed record to the point of handling (visio_runtime.consumer): its event
type, from its header or else its body, and for a type the service handles, the validated
event and the handler it goes to. Anything unreadable raises, and the consumer dead-letters
it at once."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRecord
from visio_shared import Envelope, Headers

from visio_runtime.batches import BatchRoute
from visio_runtime.json_input import Unreadable, read_json

Handler = Callable[[Any], Awaitable[None]]

_EVENT_TYPE = re.compile(r"[A-Z][A-Za-z0-9]{0,99}")


@dataclass(frozen=True)
class Read:
    """A record read to the point of handling: its type, and its handler and event if handled."""

    event_type: str
    handler: Handler | None
    event: Envelope | None
    batch: BatchRoute | None = None


def read(
    record: ConsumerRecord[Any, Any],
    headers: dict[str, str],
    handlers: Mapping[str, tuple[type[Envelope], Handler]],
    batched: Mapping[str, tuple[type[Envelope], BatchRoute]],
) -> Read:
    """The record's event type (its header, else its body's `event_type`), and for a type
    this service handles, the event. Raises on anything unreadable."""
    event_type = headers.get(Headers.EVENT_TYPE)
    if event_type is None:
        body = read_json(record.value)
        if not isinstance(body, dict) or not isinstance(body.get("event_type"), str):
            raise Unreadable("not an event: no event_type header, and none in the value")
        event_type = body["event_type"]
    if not _EVENT_TYPE.fullmatch(event_type):
        # A type we do not handle is skipped; this one is no type's name at all.
        raise Unreadable("not an event: its event_type is not an event type's name")
    in_batches = batched.get(event_type)
    route = handlers.get(event_type)
    if route is None and in_batches is None:
        return Read(event_type, None, None)
    if not record.value:
        raise Unreadable("no value at all (a null record)")
    if in_batches is not None:
        model, batch = in_batches
        return Read(event_type, None, model.model_validate_json(record.value), batch)
    assert route is not None
    model, handler = route
    return Read(event_type, handler, model.model_validate_json(record.value))
