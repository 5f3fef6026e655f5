"""Consumption done one way for every service: parse at the edge, route by event type, skip
what we do not handle (counted), retry what may succeed later, dead-letter what cannot.

`EventConsumer` is the shared error middleware: handlers are plain async functions taking the
event model; they never see bytes, and never decide what a failure means.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import pydantic
from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.middlewares import AckPolicy
from visio_shared import Envelope, Headers, Topics

from visio_runtime.errors import Poison, Transient, classify
from visio_runtime.metrics import Metrics
from visio_runtime.settings import ServiceSettings

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Envelope)
Handler = Callable[[Any], Awaitable[None]]


@dataclass
class DeadLetter:
    reason: str
    error_class: str
    attempts: int
    first_failed_at: datetime
    extra: dict[str, str] = field(default_factory=dict)


class EventConsumer:
    def __init__(
        self,
        service: str,
        settings: ServiceSettings,
        broker: KafkaBroker,
        metrics: Metrics,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.service = service
        self.settings = settings
        self.broker = broker
        self.metrics = metrics
        self.topics = Topics(settings.topic_prefix)
        self._handlers: dict[str, tuple[type[Envelope], Handler]] = {}
        self._sleep = sleep

    def on(
        self, model: type[E]
    ) -> Callable[[Callable[[E], Awaitable[None]]], Callable[[E], Awaitable[None]]]:
        """Register the handler of one event type."""

        def register(handler: Callable[[E], Awaitable[None]]) -> Callable[[E], Awaitable[None]]:
            event_type = model.model_fields["event_type"].default
            self._handlers[event_type] = (model, handler)
            return handler

        return register

    def subscribe(self, *topics: str) -> None:
        """Attach to the broker: group `<prefix>.<service>`, from the earliest offset, and the
        offset committed only after the message is handled or dead-lettered."""

        async def on_message(msg: KafkaMessage) -> None:
            record = msg.raw_message
            assert isinstance(record, ConsumerRecord)
            await self.process(record)

        self.broker.subscriber(
            *topics,
            group_id=self.topics.group(self.service),
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.NACK_ON_ERROR,
            max_poll_interval_ms=self.settings.max_poll_interval_ms,
            title=f"{self.service}:{','.join(topics)}",
        )(on_message)

    async def process(self, record: ConsumerRecord[Any, Any]) -> str:
        """Handle one record; returns the outcome ('handled', 'skipped', 'dead_lettered')."""
        headers = Headers.decode(record.headers)
        first_failed_at: datetime | None = None
        try:
            event_type, handler, model = self._route(record, headers)
        except Poison as exc:
            await self._dead_letter(record, headers, DeadLetter(str(exc), "Poison", 1, _now()))
            return "dead_lettered"
        if handler is None:
            self.metrics.inc("events_skipped_total", event_type=event_type or "unknown")
            return "skipped"
        assert model is not None

        attempt = 0
        while True:
            attempt += 1
            try:
                event = model.model_validate_json(record.value)
                await handler(event)
            except Exception as exc:  # classified below, never swallowed
                first_failed_at = first_failed_at or _now()
                kind = classify(exc)
                if kind == "poison" or attempt >= self.settings.retry_attempts:
                    reason = _describe(exc)
                    if kind != "poison":
                        reason = f"gave up after {attempt} attempts: {reason}"
                    await self._dead_letter(
                        record,
                        headers,
                        DeadLetter(reason, type(exc).__name__, attempt, first_failed_at),
                    )
                    return "dead_lettered"
                delay = self._delay(attempt, exc)
                log.warning(
                    "%s: %s on %s (attempt %d), retrying in %.2fs",
                    self.service,
                    type(exc).__name__,
                    event_type,
                    attempt,
                    delay,
                    extra={"correlation_id": headers.get(Headers.CORRELATION_ID)},
                )
                self.metrics.inc("events_retried_total", event_type=event_type)
                await self._sleep(delay)
            else:
                self.metrics.inc("events_handled_total", event_type=event_type)
                return "handled"

    def _route(
        self, record: ConsumerRecord[Any, Any], headers: dict[str, str]
    ) -> tuple[str, Handler | None, type[Envelope] | None]:
        event_type = headers.get(Headers.EVENT_TYPE)
        if event_type is None:
            try:
                body = json.loads(record.value)
            except (TypeError, ValueError) as exc:
                raise Poison(f"value is not JSON: {exc}") from exc
            if not isinstance(body, dict) or not isinstance(body.get("event_type"), str):
                raise Poison("value is not an event: no event_type")
            event_type = body["event_type"]
        assert event_type is not None
        route = self._handlers.get(event_type)
        if route is None:
            return event_type, None, None
        model, handler = route
        return event_type, handler, model

    def _delay(self, attempt: int, exc: BaseException) -> float:
        hinted = exc.retry_after if isinstance(exc, Transient) else None
        delay: float = self.settings.retry_initial_delay_s * 2 ** (attempt - 1)
        if hinted is not None:
            delay = max(delay, hinted)
        delay = min(delay, self.settings.retry_max_delay_s)
        return delay * random.uniform(0.8, 1.2)

    async def _dead_letter(
        self, record: ConsumerRecord[Any, Any], headers: dict[str, str], letter: DeadLetter
    ) -> None:
        dlq_headers = {
            **headers,
            Headers.DLQ_SOURCE_TOPIC: record.topic,
            Headers.DLQ_SOURCE_PARTITION: str(record.partition),
            Headers.DLQ_SOURCE_OFFSET: str(record.offset),
            Headers.DLQ_CONSUMER_GROUP: self.topics.group(self.service),
            Headers.DLQ_ERROR_CLASS: letter.error_class,
            Headers.DLQ_REASON: letter.reason[:2000],
            Headers.DLQ_ATTEMPTS: str(letter.attempts),
            Headers.DLQ_FIRST_FAILED_AT: letter.first_failed_at.isoformat(),
            Headers.DLQ_DEAD_LETTERED_AT: _now().isoformat(),
        }
        await self.broker.publish(
            record.value if record.value is not None else b"",
            self.topics.dlq(self.service),
            key=record.key,
            headers=dlq_headers,
        )
        self.metrics.inc("events_dead_lettered_total", error_class=letter.error_class)
        log.error(
            "%s: dead-lettered %s/%s@%s: %s",
            self.service,
            record.topic,
            record.partition,
            record.offset,
            letter.reason,
        )


def _now() -> datetime:
    return datetime.now(UTC)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, pydantic.ValidationError):
        fields = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(root)'}: {error['msg']}"
            for error in exc.errors(include_url=False)
        )
        return f"invalid {exc.title}: {fields}"
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"
