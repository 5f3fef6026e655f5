"""Consumption done one way for every service: parse at the edge, route by event type, skip
what we do not handle (counted), retry what may succeed later, dead-letter what cannot.

`EventConsumer` is the shared error middleware: handlers are plain async functions taking the
event model; they never see bytes, and never decide what a failure means.

Retries never sleep in the consume loop. A message that failed transiently is held back by
rewinding its partition to it and pausing that partition until its delay is over: the consumer
keeps polling (so it keeps its place in the group whatever the delay), the other partitions
flow, and nothing behind the message on its partition — the same appointment's later events
included — can overtake it. The committed offset never passes it, so a crash or a rebalance
during the delay redelivers it. README "Operations" says why this rather than parking keys.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import pydantic
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.middlewares import AckPolicy
from visio_shared import Envelope, Headers, Topics

from visio_runtime.errors import Poison, Transient, classify
from visio_runtime.lanes import Lanes
from visio_runtime.logs import log_context
from visio_runtime.metrics import ConsumerMetrics, Metrics, event_type_label
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


@dataclass(frozen=True)
class Failure:
    """How one message has failed so far, carried from one attempt to the next."""

    attempts: int
    first_failed_at: datetime


@dataclass(frozen=True)
class RetryLater:
    delay: float
    failure: Failure


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
        # Set by `subscribe` when settings.consumer_concurrency > 1 (see visio_runtime.lanes).
        self._lanes: Lanes | None = None
        self._stopping = False
        # Per partition: the held message's offset and its failures (one held at a time).
        self._held: dict[TopicPartition, tuple[int, Failure]] = {}
        self._count = ConsumerMetrics(metrics)

    def on(
        self, model: type[E]
    ) -> Callable[[Callable[[E], Awaitable[None]]], Callable[[E], Awaitable[None]]]:
        """Register the handler of one event type."""

        def register(handler: Callable[[E], Awaitable[None]]) -> Callable[[E], Awaitable[None]]:
            event_type = model.model_fields["event_type"].default
            self._handlers[event_type] = (model, handler)
            return handler

        return register

    @property
    def handled(self) -> dict[str, type[Envelope]]:
        """Event type → model, for every type this consumer handles."""
        return {event_type: model for event_type, (model, _) in self._handlers.items()}

    def subscribe(self, *topics: str, separately: bool = False) -> None:
        """Attach to the broker: group `<prefix>.<service>`, from the earliest offset, and the
        offset committed only after the message is handled or dead-lettered.

        With `consumer_concurrency` > 1, records of different appointments are handled side by
        side and the lanes commit each partition's watermark themselves (visio_runtime.lanes);
        with 1, one record at a time, FastStream committing after each.

        `separately`: one client per topic (same group, same lanes), each fetching on its own,
        so a backlog on one topic cannot keep the other waiting — for a service whose handlers
        take events of its topics in any order (notifications). Together (the default), one
        client reads them all and one appointment's events keep the order they arrive in
        across topics (meetings needs that for a withdrawal)."""
        concurrency = self.settings.consumer_concurrency
        if concurrency > 1:
            self._lanes = Lanes(
                self.attempt,
                is_retry=lambda outcome: isinstance(outcome, RetryLater),
                on_error=self._could_not_dead_letter,
                limit=concurrency,
                sleep=self._sleep,
            )
        for group in [[topic] for topic in topics] if separately else [list(topics)]:
            self.broker.subscriber(
                *group,
                group_id=self.topics.group(self.service),
                auto_offset_reset="earliest",
                ack_policy=AckPolicy.MANUAL if self._lanes else AckPolicy.NACK_ON_ERROR,
                max_partition_fetch_bytes=self.settings.consumer_partition_fetch_bytes,
                max_poll_interval_ms=self.settings.max_poll_interval_ms,
                title=f"{self.service}:{','.join(group)}",
            )(self.consume)

    async def process(self, record: ConsumerRecord[Any, Any]) -> str:
        """Handle one record to its end ('handled', 'skipped', 'dead_lettered'), waiting in
        place between attempts: for tools and tests that hand records over one by one. The
        subscribed consumer never waits in place (see `consume`)."""
        failure: Failure | None = None
        while True:
            outcome = await self.attempt(record, failure)
            if not isinstance(outcome, RetryLater):
                return outcome
            failure = outcome.failure
            await self._sleep(outcome.delay)

    async def attempt(
        self, record: ConsumerRecord[Any, Any], failure: Failure | None = None
    ) -> str | RetryLater:
        """One try at one record: its outcome, or when to try again."""
        headers = Headers.decode(record.headers)
        with log_context(
            event_id=headers.get(Headers.EVENT_ID),
            event_type=headers.get(Headers.EVENT_TYPE),
            correlation_id=headers.get(Headers.CORRELATION_ID),
        ):
            try:
                event_type, handler, model = self._route(record, headers)
            except Poison as exc:
                self._count.consumed.labels(topic=record.topic, event_type="unknown").inc()
                letter = DeadLetter(str(exc), "Poison", 1, _now())
                await self._dead_letter(record, headers, letter, summary=letter.reason)
                return "dead_lettered"
            labels = {
                "topic": record.topic,
                "event_type": event_type_label(event_type, self._handlers),
            }
            if failure is None:
                self._count.consumed.labels(**labels).inc()
            if handler is None or model is None:
                self._count.skipped.labels(**labels).inc()
                return "skipped"
            return await self._handle(record, headers, model, handler, failure, labels)

    async def _handle(
        self,
        record: ConsumerRecord[Any, Any],
        headers: dict[str, str],
        model: type[Envelope],
        handler: Handler,
        failure: Failure | None,
        labels: dict[str, str],
    ) -> str | RetryLater:
        started = time.perf_counter()
        appointment_id = None
        try:
            event = model.model_validate_json(record.value)
            appointment_id = getattr(event, "appointment_id", None)
            with log_context(appointment_id=appointment_id):
                await handler(event)
        except Exception as exc:  # classified below, never swallowed
            with log_context(appointment_id=appointment_id):
                return await self._failed(record, headers, exc, failure, labels)
        finally:
            self._count.latency.labels(**labels).observe(time.perf_counter() - started)
        self._count.handled.labels(**labels).inc()
        return "handled"

    async def _failed(
        self,
        record: ConsumerRecord[Any, Any],
        headers: dict[str, str],
        exc: Exception,
        failure: Failure | None,
        labels: dict[str, str],
    ) -> str | RetryLater:
        failure = Failure(
            attempts=failure.attempts + 1 if failure else 1,
            first_failed_at=failure.first_failed_at if failure else _now(),
        )
        error_class = type(exc).__name__
        self._count.failed.labels(**labels, error_class=error_class).inc()
        kind = classify(exc)
        if kind == "poison" or failure.attempts >= self.settings.retry_attempts:
            reason = _describe(exc)
            if kind != "poison":
                reason = f"gave up after {failure.attempts} attempts: {reason}"
            letter = DeadLetter(reason, error_class, failure.attempts, failure.first_failed_at)
            await self._dead_letter(record, headers, letter, summary=_loggable(exc))
            return "dead_lettered"
        delay = self._delay(failure.attempts, exc)
        log.warning(
            "%s: %s on %s (attempt %d), retrying in %.2fs",
            self.service,
            error_class,
            labels["event_type"],
            failure.attempts,
            delay,
        )
        self._count.retried.labels(**labels).inc()
        return RetryLater(delay, failure)

    async def consume(self, msg: KafkaMessage) -> None:
        """One delivery from a FastStream subscriber: what `subscribe` wires, and what a
        service's own subscriber calls for the events it leaves to this consumer. A message to
        retry holds its partition back (module docstring). Never raises: FastStream would
        rewind and hand the same message straight back, a hot loop."""
        record, consumer = msg.raw_message, msg.consumer
        assert isinstance(record, ConsumerRecord)
        if self._lanes is not None and isinstance(consumer, AIOKafkaConsumer):
            if not self._stopping:  # stopping: left uncommitted, so the next owner has it
                await self._lanes.dispatch(record, consumer)
            return
        if not isinstance(consumer, AIOKafkaConsumer):
            # FastStream's TestKafkaBroker: no partition to pause, so wait in place.
            await self.process(record)
            return
        tp = TopicPartition(record.topic, record.partition)
        held = self._held.pop(tp, None)
        failure = held[1] if held and held[0] == record.offset else None
        try:
            outcome = await self.attempt(record, failure)
        except Exception:
            outcome = self._could_not_dead_letter(record, failure)
        if isinstance(outcome, RetryLater):
            self._held[tp] = (record.offset, outcome.failure)
            self._hold(consumer, tp, record.offset, outcome.delay)

    def _could_not_dead_letter(
        self, _record: ConsumerRecord[Any, Any], failure: Failure | None
    ) -> RetryLater:
        # Dead-lettering itself failed (the broker is away): hold on and try later.
        log.exception("%s: could not dead-letter; holding the record", self.service)
        return RetryLater(
            self.settings.retry_max_delay_s, failure or Failure(0, first_failed_at=_now())
        )

    async def commit_now(self) -> None:
        """Commit what the lanes have finished, without waiting for their next flush."""
        if self._lanes is not None:
            await self._lanes.flush()

    async def drain(self, timeout_s: float = 10.0) -> None:
        """On shutdown: take no new record, let those in flight finish, commit."""
        self._stopping = True
        if self._lanes is not None:
            await self._lanes.drain(timeout_s)

    def _hold(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int, delay: float
    ) -> None:
        consumer.seek(tp, offset)
        consumer.pause(tp)
        asyncio.get_running_loop().call_later(delay, _release, consumer, tp)

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
        self,
        record: ConsumerRecord[Any, Any],
        headers: dict[str, str],
        letter: DeadLetter,
        summary: str,
    ) -> None:
        """Publish the letter; the log line says only `summary`, which names no one (the full
        reason, possibly quoting the payload, stays in the letter's headers)."""
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
        self._count.dead_lettered.labels(
            topic=record.topic,
            event_type=event_type_label(headers.get(Headers.EVENT_TYPE), self._handlers),
            error_class=letter.error_class,
        ).inc()
        log.error(
            "%s: dead-lettered %s/%s@%s: %s",
            self.service,
            record.topic,
            record.partition,
            record.offset,
            summary,
        )

    # What /health/ready and /metrics say about the service's consumers (its own subscribers
    # included, such as booking's, which hands events over through `consume` or `process`).

    def _consumers(self) -> Iterator[AIOKafkaConsumer]:
        for subscriber in self.broker.subscribers:
            consumer = getattr(subscriber, "consumer", None)
            if isinstance(consumer, AIOKafkaConsumer):
                yield consumer

    def state(self) -> dict[str, Any]:
        """'assigned' (with its partitions and how many are held back) or 'waiting' for the
        group to assign some; 'none' for a service that consumes nothing."""
        if not self.broker.subscribers:
            return {"state": "none"}
        assigned = [tp for consumer in self._consumers() for tp in consumer.assignment()]
        held = sum(len(consumer.paused()) for consumer in self._consumers())
        if self._lanes is not None:
            held += self._lanes.waiting_to_retry
        return {
            "state": "assigned" if assigned else "waiting",
            "partitions": len(assigned),
            "held": held,
        }

    async def observe(self) -> None:
        """Refresh the consumer gauges (called when /metrics is read): lag is the partition's
        end as last fetched (its highwater) minus the consumer's own position."""
        self._count.lag.clear()
        assigned = held = 0
        for consumer in self._consumers():
            partitions = consumer.assignment()
            assigned += len(partitions)
            held += len(consumer.paused())
            for tp in partitions:
                end = consumer.highwater(tp)  # None until the partition's first fetch
                if end is None:
                    continue
                try:  # a partition being reset has no position yet: no sample this time
                    position = await asyncio.wait_for(consumer.position(tp), 1)
                except TimeoutError:
                    continue
                lag = max(end - position, 0)
                self._count.lag.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)
        if self._lanes is not None:
            held += self._lanes.waiting_to_retry
        self._count.assigned.set(assigned)
        self._count.held.set(held)


def _release(consumer: AIOKafkaConsumer, tp: TopicPartition) -> None:
    # Revoked meanwhile (or stopped): whoever owns the partition now starts it unpaused.
    if tp in consumer.assignment():
        consumer.resume(tp)


def _now() -> datetime:
    return datetime.now(UTC)


def _loggable(exc: BaseException) -> str:
    """What a log line may say of a failure. A handler's exception text may quote a person
    (an SMTP refusal naming the address, a name in a message), and names cannot be told apart
    from other words: only the class, and for invalid payloads the fields, which we wrote."""
    if isinstance(exc, pydantic.ValidationError):
        return _describe(exc)
    return f"{type(exc).__name__} (reason in the dead letter's dlq.reason header)"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, pydantic.ValidationError):
        fields = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(root)'}: {error['msg']}"
            for error in exc.errors(include_url=False)
        )
        return f"invalid {exc.title}: {fields}"
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"
