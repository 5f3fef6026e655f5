"""Consumption done one way for every service: parse at the edge, route by event type, skip
what we do not handle (counted), retry what may succeed later, dead-letter what cannot.

`EventConsumer` is the shared error middleware: handlers are plain async functions taking the
event model; they never see bytes, and never decide what a failure means. A topic whose records
are not events (booking's inbound requests) has a `RecordHandler` instead, which takes the raw
record and fails the same way: the same retries, the same dead letters.

Batch handlers (`on_batch`) take a list of events instead of one: what arrived together (one
poll, or what came within `consumer_batch_window_ms`), at most one event per key, in arrival
order. The API, in full:

    @consumer.on_batch(MeetingReady, MeetingFailed)
    async def follow(events: list[MeetingReady | MeetingFailed]) -> None:
        async with pool.acquire() as conn, conn.transaction():
            fresh = await mark_processed_many(conn, events)   # visio_runtime.db
            ...                                               # effects, set-wise (unnest)
        await publish_events(broker, topic, caused)           # visio_shared: one produce batch

A batch handler succeeds or raises for the whole list, like a transaction: it must write its
effects and its idempotency markers in one transaction, and publish only after the commit (a
redelivered event is then recognised by its marker and, if the handler wishes, announced
again). When it raises, the consumer splits the list in halves and calls it again on each, down
to the one event that fails, which then meets the fate of any failed event here: dead-lettered
at once if poison, else retried (its key's lane waiting, its partition's commit behind it) and
dead-lettered past the retries. So a handler never sorts out whose fault a failure was; its
cost is a few rolled-back transactions when something fails, nothing when nothing does.
Lanes must be on (`consumer_concurrency` > 1) for events to travel together; with one record
at a time, each batch holds one event (visio_runtime.batches says how batches are formed).

Reading a record is either done or a dead letter: whatever an input makes the decoding, the
routing or the validation raise — invalid JSON, nesting too deep to parse, a missing header, a
null value, an exception nobody foresaw — the record is dead-lettered with the reason at once
and its partition moves on. Only handling is retried, and only dead-lettering itself (the
broker away) holds a record without end.

Retries never sleep in the consume loop. A message that failed transiently is held back by
rewinding its partition to it and pausing that partition until its delay is over: the consumer
keeps polling (so it keeps its place in the group whatever the delay), the other partitions
flow, and nothing behind the message on its partition — the same appointment's later events
included — can overtake it. The committed offset never passes it, so a crash or a rebalance
during the delay redelivers it. README "Operations" says why this rather than parking keys.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from opentelemetry.trace import Tracer
from visio_shared import Envelope, Headers, Topics

from visio_runtime import consumer_health, routing, tracing
from visio_runtime.batches import Batcher, BatchHandler, BatchRoute, Item
from visio_runtime.dead_letters import DeadLetter, DeadLetters
from visio_runtime.errors import RetryPolicy
from visio_runtime.failures import (
    Failing,
    Failure,
    GaveUp,
    RetryLater,
    describe,
    hold,
    loggable,
    loggable_header,
    now,
)
from visio_runtime.kafka import records_subscriber
from visio_runtime.lanes import Lanes
from visio_runtime.logs import log_context
from visio_runtime.metrics import ConsumerMetrics, Metrics, event_type_label
from visio_runtime.routing import Handler
from visio_runtime.settings import ServiceSettings

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Envelope)


class RecordHandler(Protocol):
    """Takes the raw records of one topic (`EventConsumer.on_topic`). `handle` raises to fail:
    `Poison` (or any exception the policy calls poison) dead-letters at once, anything else is
    retried, then dead-lettered. `gave_up` runs once the record's letter is written."""

    async def handle(self, record: ConsumerRecord[Any, Any], headers: dict[str, str]) -> None: ...

    async def gave_up(self, record: ConsumerRecord[Any, Any], letter: DeadLetter) -> None: ...


@dataclass(frozen=True)
class _Context:
    """What finishing one record of a batch needs, carried by its `Item`."""

    record: ConsumerRecord[Any, Any]
    headers: dict[str, str]
    labels: dict[str, str]
    failure: Failure | None


class EventConsumer:
    def __init__(
        self,
        service: str,
        settings: ServiceSettings,
        broker: KafkaBroker,
        metrics: Metrics,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        tracer: Tracer = tracing.NO_TRACER,
    ) -> None:
        self.service = service
        self.tracer = tracer
        self.settings = settings
        self.broker = broker
        self.metrics = metrics
        self.topics = Topics(settings.topic_prefix)
        self.policy = RetryPolicy.of(settings)
        self._handlers: dict[str, tuple[type[Envelope], Handler]] = {}
        self._batched: dict[str, tuple[type[Envelope], BatchRoute]] = {}
        # With lanes and batch handlers: what collects their events (see `subscribe`), and the
        # bound on one-by-one handler calls at once (lanes then hold more records than that).
        self._batcher: Batcher | None = None
        self._handler_slots: asyncio.Semaphore | None = None
        self._records: dict[str, tuple[str, RecordHandler]] = {}
        self._sleep = sleep
        # Set by `subscribe` when settings.consumer_concurrency > 1 (see visio_runtime.lanes).
        self._lanes: Lanes | None = None
        self._stopping = False
        # Topic → the consumer group its client reads it in (see `subscribe`).
        self._groups: dict[str, str] = {}
        # Per partition: the held message's offset and its failures (one held at a time).
        self._held: dict[TopicPartition, tuple[int, Failure]] = {}
        self._count = ConsumerMetrics(metrics)
        self._failing = Failing(service, self.policy, self._count, lambda: self.dead_letters)

    @property
    def dead_letters(self) -> DeadLetters:
        """This service's dead-letter writer, on whichever broker the consumer has now."""
        return DeadLetters(
            self.service,
            self.topics,
            self.broker,
            self._count,
            self.settings.dlq_max_value_bytes,
            self._groups,
        )

    def on(
        self, model: type[E]
    ) -> Callable[[Callable[[E], Awaitable[None]]], Callable[[E], Awaitable[None]]]:
        """Register the handler of one event type."""

        def register(handler: Callable[[E], Awaitable[None]]) -> Callable[[E], Awaitable[None]]:
            event_type = model.model_fields["event_type"].default
            self._handlers[event_type] = (model, handler)
            return handler

        return register

    def on_batch(
        self, *models: type[E]
    ) -> Callable[[Callable[[list[E]], Awaitable[None]]], Callable[[list[E]], Awaitable[None]]]:
        """Register one handler for batches of events of these types (module docstring)."""

        def register(
            handler: Callable[[list[E]], Awaitable[None]],
        ) -> Callable[[list[E]], Awaitable[None]]:
            call: BatchHandler = handler  # called with E's only
            route = BatchRoute(call, getattr(handler, "__name__", "batch"))
            for model in models:
                event_type = model.model_fields["event_type"].default
                self._handlers.pop(event_type, None)
                self._batched[event_type] = (model, route)
            return handler

        return register

    def on_topic(self, topic: str, handler: RecordHandler, label: str) -> None:
        """Hand every record of `topic` to `handler` as it comes (no event routing); `label`
        stands for their event type in the metrics."""
        self._records[topic] = (label, handler)

    @property
    def handled(self) -> dict[str, type[Envelope]]:
        """Event type → model, for every type this consumer handles."""
        routes = [*self._handlers.items(), *self._batched.items()]
        return {event_type: model for event_type, (model, _) in routes}

    def subscribe(self, *topics: str, separately: bool = False) -> None:
        """Attach to the broker: group `<prefix>.<service>`, from the earliest offset, and the
        offset committed only after the message is handled or dead-lettered.

        With `consumer_concurrency` > 1, records of different appointments are handled side by
        side, a poll's records come in one delivery, and the lanes commit each partition's
        watermark (visio_runtime.lanes); with 1, one record at a time, FastStream committing.

        `separately`: one client per topic (same lanes), each fetching on its own, so a backlog
        on one topic cannot keep the other waiting — for a service whose handlers take events
        of its topics in any order (notifications). Each client is then in a group of its own,
        `<prefix>.<service>.<topic's stream>`: two clients of one process in one group, each
        subscribed to another topic, made tansu rebalance the group again and again (every
        ~13 s in a backlog), and neither client kept its partitions long enough to consume.
        Together (the default), one client reads them all, in group `<prefix>.<service>`, and
        one appointment's events keep the order they arrive in across topics (meetings needs
        that for a withdrawal).

        FastStream is told to leave records as they came (any header, the value as bytes):
        reading them is this consumer's job, where a failure becomes a dead letter."""
        concurrency = self.settings.consumer_concurrency
        if concurrency > 1:
            limit = concurrency
            if self._batched:
                # Records wait in their lanes for the batch they join: as many may be taken
                # as a batch holds, while one-by-one handlers still run `concurrency` at once.
                batch_max = self.settings.consumer_batch_max
                limit += batch_max
                self._handler_slots = asyncio.Semaphore(concurrency)
                self._batcher = Batcher(
                    self._batch_handled,
                    self._batch_failed,
                    window_s=self.settings.consumer_batch_window_ms / 1000,
                    max_size=batch_max,
                    parallel=self.settings.consumer_batch_parallel,
                    tracer=self.tracer,
                )
            self._lanes = Lanes(
                self.attempt,
                is_retry=lambda outcome: isinstance(outcome, RetryLater),
                on_error=self._could_not_dead_letter,
                limit=limit,
                sleep=self._sleep,
            )
        for group in [[topic] for topic in topics] if separately else [list(topics)]:
            group_id = self.topics.group(self.service)
            if separately:
                group_id += "." + group[0].removeprefix(f"{self.topics.prefix}.")
            self._groups.update(dict.fromkeys(group, group_id))
            subscriber = records_subscriber(
                self.broker,
                group,
                group_id=group_id,
                settings=self.settings,
                title=f"{self.service}:{','.join(group)}",
                poll_max=limit if self._lanes is not None else None,
            )
            subscriber(self.consume)

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
        """One try at one record: its outcome, or when to try again. Raises only when its dead
        letter cannot be written."""
        headers = Headers.decode(record.headers)
        with (
            tracing.handling(self.tracer, f"{self.service} process {record.topic}", headers),
            log_context(
                event_id=loggable_header(headers, Headers.EVENT_ID),
                event_type=loggable_header(headers, Headers.EVENT_TYPE),
                correlation_id=loggable_header(headers, Headers.CORRELATION_ID),
            ),
        ):
            route = self._records.get(record.topic)
            if route is not None:
                label, records = route
                if failure is None:
                    self._count.of(record.topic, label).consumed.inc()
                return await self._run(
                    record,
                    headers,
                    lambda: records.handle(record, headers),
                    failure,
                    {"topic": record.topic, "event_type": label},
                    records.gave_up,
                )
            try:
                read = routing.read(record, headers, self._handlers, self._batched)
            except Exception as exc:  # whatever the input made the reading raise: poison
                if failure is None:
                    self._count.of(record.topic, "unknown").consumed.inc()
                letter = DeadLetter(describe(exc), type(exc).__name__, 1, now())
                await self.dead_letters.write(
                    record, headers, letter, label="unknown", summary=loggable(exc)
                )
                return "dead_lettered"
            labels = {
                "topic": record.topic,
                "event_type": event_type_label(
                    read.event_type, self._handlers.keys() | self._batched.keys()
                ),
            }
            if failure is None:
                self._count.of(**labels).consumed.inc()
            event = read.event
            if read.batch is not None and event is not None:
                if self._batcher is None:  # one record at a time: a batch of one
                    batch = read.batch.handler
                    with log_context(appointment_id=getattr(event, "appointment_id", None)):
                        return await self._run(
                            record, headers, lambda: batch([event]), failure, labels
                        )
                context = _Context(record, headers, labels, failure)
                outcome: str | RetryLater = await self._batcher.submit(
                    read.batch, Item(event, context)
                )
                return outcome
            if read.handler is None or event is None:
                self._count.of(**labels).skipped.inc()
                return "skipped"
            handler = read.handler
            with log_context(appointment_id=getattr(event, "appointment_id", None)):
                return await self._run(record, headers, lambda: handler(event), failure, labels)

    def _batch_handled(self, items: Sequence[Item], seconds: float) -> None:
        for item in items:
            self._count.of(**item.context.labels).handled.inc()
        # One observation per batch: the time its handler took for all of them.
        self._count.of(**items[0].context.labels).latency.observe(seconds)

    async def _batch_failed(self, item: Item, exc: Exception) -> str | RetryLater:
        """The one record a batch failed on, alone: it fails as any record does here."""
        context: _Context = item.context
        with log_context(
            event_id=loggable_header(context.headers, Headers.EVENT_ID),
            event_type=loggable_header(context.headers, Headers.EVENT_TYPE),
            appointment_id=getattr(item.event, "appointment_id", None),
        ):
            return await self._failing.failed(
                context.record, context.headers, exc, context.failure, context.labels, None
            )

    async def _run(
        self,
        record: ConsumerRecord[Any, Any],
        headers: dict[str, str],
        call: Callable[[], Awaitable[None]],
        failure: Failure | None,
        labels: dict[str, str],
        gave_up: GaveUp | None = None,
    ) -> str | RetryLater:
        source = self._count.of(**labels)
        started = time.perf_counter()
        try:
            if self._handler_slots is not None:
                async with self._handler_slots:
                    await call()
            else:
                await call()
        except Exception as exc:  # classified below, never swallowed
            return await self._failing.failed(record, headers, exc, failure, labels, gave_up)
        finally:
            source.latency.observe(time.perf_counter() - started)
        source.handled.inc()
        return "handled"

    async def consume(self, _body: Any = None) -> None:
        """One delivery from a FastStream subscriber: what `subscribe` wires, and what a
        service's own subscriber calls for the events it leaves to this consumer. A message to
        retry holds its partition back (module docstring). Never raises: FastStream would
        rewind and hand the same message straight back, a hot loop.

        The message is taken from the broker's context, where FastStream puts it for the
        handler's call, not asked for as a `KafkaMessage` parameter: the broker runs without
        FastDepends (`make_broker`), which resolved that parameter in a worker thread for
        every record. `_body` is whatever the subscriber's decoder made of the value: unused,
        the record is read here."""
        msg: KafkaMessage = self.broker.context.get_local("message")
        record, consumer = msg.raw_message, msg.consumer
        if isinstance(record, tuple):  # a poll's records (with lanes)
            assert self._lanes is not None and isinstance(consumer, AIOKafkaConsumer)
            for one in record:
                if self._stopping:  # stopping: left uncommitted, so the next owner has them
                    return
                await self._lanes.dispatch(one, consumer)
            return
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
            hold(consumer, tp, record.offset, outcome.delay)

    def _could_not_dead_letter(
        self, _record: ConsumerRecord[Any, Any], failure: Failure | None
    ) -> RetryLater:
        # Dead-lettering itself failed (the broker is away): hold on and try later.
        log.exception("%s: could not dead-letter; holding the record", self.service)
        return RetryLater(
            self.settings.retry_max_delay_s, failure or Failure(0, first_failed_at=now())
        )

    @property
    def in_flight(self) -> int:
        """Records taken and not yet done with (lanes only; one at a time, 0)."""
        return self._lanes.in_flight if self._lanes is not None else 0

    async def commit_now(self) -> None:
        """Commit what the lanes have finished, without waiting for their next flush."""
        if self._lanes is not None:
            await self._lanes.flush()

    async def drain(self, timeout_s: float = 10.0) -> None:
        """On shutdown: take no new record, let those in flight finish, commit."""
        self._stopping = True
        if self._lanes is not None:
            await self._lanes.drain(timeout_s)

    # What /health/ready and /metrics say about the service's consumers.

    def assignment(self) -> set[TopicPartition]:
        """Every partition the service's consumers hold now, across their groups."""
        return consumer_health.assignment(self.broker)

    def state(self) -> dict[str, Any]:
        """'assigned', 'waiting' or 'none' (visio_runtime.consumer_health)."""
        return consumer_health.state(self.broker, self._lanes)

    async def observe(self) -> None:
        """Refresh the consumer gauges (called when /metrics is read)."""
        await consumer_health.observe(self.broker, self._lanes, self._count)
