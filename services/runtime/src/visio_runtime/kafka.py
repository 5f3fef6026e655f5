"""Speaking Kafka the Visio RDV way: one broker factory, topics created explicitly at start."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

from aiokafka import ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from faststream.kafka import KafkaBroker
from faststream.kafka.response import KafkaPublishCommand
from faststream.message import StreamMessage
from faststream.middlewares import AckPolicy, BaseMiddleware
from faststream.security import (
    BaseSecurity,
    SASLPlaintext,
    SASLScram256,
    SASLScram512,
)
from visio_shared import Headers

from visio_runtime.metrics import Metrics, event_type_label
from visio_runtime.settings import ServiceSettings

log = logging.getLogger(__name__)


def kafka_security(settings: ServiceSettings) -> BaseSecurity | None:
    context = settings.kafka_ssl_context()
    if settings.kafka_security_protocol in ("PLAINTEXT", "SSL"):
        return BaseSecurity(ssl_context=context) if context else None
    username = settings.kafka_sasl_username or ""
    password = (
        settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
    )
    kind = {
        "SCRAM-SHA-256": SASLScram256,
        "SCRAM-SHA-512": SASLScram512,
        "PLAIN": SASLPlaintext,
    }[settings.kafka_sasl_mechanism]
    return kind(username, password, ssl_context=context)


def _client_security_kwargs(settings: ServiceSettings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    context = settings.kafka_ssl_context()
    if context:
        kwargs["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        kwargs["sasl_plain_password"] = (
            settings.kafka_sasl_password.get_secret_value()
            if settings.kafka_sasl_password
            else None
        )
    return kwargs


def make_broker(
    settings: ServiceSettings, client_id: str, middlewares: Sequence[Any] = ()
) -> KafkaBroker:
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        # aiokafka's 16 KB batches held 16 events: the rest of a handler's wave, sent at once
        # (visio_shared.publish_events), each waited for that batch to drain, woke, found the
        # next one full and waited again — a fifth of consent's CPU in the backlog bench.
        max_batch_size=settings.kafka_producer_batch_bytes,
        security=kafka_security(settings),
        graceful_timeout=10.0,
        logger=logging.getLogger(f"visio.{client_id}.kafka"),
        # FastStream's « Received » / « Processed » line for every message: DEBUG, not INFO.
        # Two JSON lines per event in every service cost more than the event's own handling
        # in some of them (bench profile); failures are logged by the consumer at WARNING+.
        log_level=logging.DEBUG,
        middlewares=tuple(middlewares),
        # No FastDepends: our one handler (`EventConsumer.consume`) reads its record itself.
        # With it, FastDepends resolved the handler's `KafkaMessage` parameter by running the
        # context lookup in a worker thread for every record: 15-30 % of a consumer's CPU in
        # the bench profile (thread hand-offs, locks), for a dictionary lookup.
        apply_types=False,
    )


def topic_configs(settings: ServiceSettings, name: str) -> dict[str, str]:
    """The configs a topic is created with: its retention, since events carry personal data,
    and, when set, how many replicas must hold a write before `acks=all` answers."""
    if not settings.topic_configs_enabled:
        return {}
    configs: dict[str, str] = {}
    days = settings.dlq_retention_days if name.endswith(".dlq") else settings.topic_retention_days
    if days > 0:
        configs["retention.ms"] = str(int(days * 86_400_000))
    if settings.topic_segment_days > 0:
        # The longest a value outlives an erasure is retention + this (docs/personal-data.md).
        configs["segment.ms"] = str(int(settings.topic_segment_days * 86_400_000))
    if settings.topic_min_insync_replicas is not None:
        configs["min.insync.replicas"] = str(settings.topic_min_insync_replicas)
    return configs


async def start_broker(broker: KafkaBroker) -> None:
    """Start `broker` with all its subscribers at once.

    FastStream starts a broker's subscribers one after the other. aiokafka's start of a group
    consumer waits for the group's first assignment, and a broker holds a new group's first
    join for a while (Kafka's `group.initial.rebalance.delay.ms`, 3 s by default; tansu 5 s).
    A service with five subscriptions (booking with two partners' request topics) was then
    ready after five joins, 25 s on tansu, and a restarted notifications after two. Each
    subscription is a client of its own, in a group of its own, so they join side by side:
    ready after one join. One that fails to start fails the start, once the others' starts
    are over (none left half-way for the caller's stop)."""
    await broker.connect()
    starts = [subscriber.start() for subscriber in broker.subscribers]
    for outcome in await asyncio.gather(*starts, return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome
    for publisher in broker.publishers:
        await publisher.start()
    broker.running = True


async def ensure_topics(settings: ServiceSettings, names: list[str]) -> list[str]:
    """Create the topics this service touches, with their partitions; return those created.

    Explicit, because tansu (and a misconfigured Kafka) silently auto-creates a topic on publish
    with one partition, which would break per-appointment ordering at scale-out.
    """
    admin = admin_client(settings)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in dict.fromkeys(names) if name not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [
                        NewTopic(
                            name,
                            num_partitions=settings.topic_partitions,
                            replication_factor=settings.topic_replication_factor,
                            topic_configs=topic_configs(settings, name),
                        )
                        for name in missing
                    ]
                )
            except TopicAlreadyExistsError:
                # Another replica won the race; the topic is there, which is all we need.
                pass
            log.info("created topics %s", missing)
        return missing
    finally:
        await admin.close()


def admin_client(settings: ServiceSettings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers, **_client_security_kwargs(settings)
    )


def client_kwargs(settings: ServiceSettings) -> dict[str, Any]:
    """What a plain aiokafka consumer or producer needs to reach the broker as the services do
    (bootstrap servers, TLS, SASL): for tools such as `visio-rdv ops`."""
    return {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        **_client_security_kwargs(settings),
    }


class PublishedSeries:
    """`visio_messages_published_total`'s series, one per topic and event type, each looked up
    once: `labels()` takes a lock and rebuilds its key on every call (7 times `inc()`'s cost),
    once per message published (`ConsumerMetrics.of` does the same for what is consumed)."""

    def __init__(self, metrics: Metrics) -> None:
        self.counter = metrics.counter(
            "messages_published_total",
            "Messages published, by topic and event type.",
            ["topic", "event_type"],
        )
        self._series: dict[tuple[str, str], Any] = {}

    def of(self, topic: str, event_type: str) -> Any:
        key = (topic, event_type)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = self.counter.labels(topic=topic, event_type=event_type)
        return found


class _CountPublished(BaseMiddleware[KafkaPublishCommand, Any]):
    """Counts what the broker publishes, by topic and event type (from the headers)."""

    def __init__(self, msg: Any, /, *, context: Any, series: PublishedSeries) -> None:
        super().__init__(msg, context=context)
        self.series = series

    async def publish_scope(
        self, call_next: Callable[[Any], Awaitable[Any]], cmd: KafkaPublishCommand
    ) -> Any:
        result = await call_next(cmd)
        event_type = event_type_label(cmd.headers.get(Headers.EVENT_TYPE))
        self.series.of(cmd.destination, event_type).inc(len(cmd.batch_bodies))
        return result


def publish_metrics(metrics: Metrics) -> Callable[..., _CountPublished]:
    """A broker middleware feeding `visio_messages_published_total`."""
    return partial(_CountPublished, series=PublishedSeries(metrics))


# How FastStream hands records to our consumer (`EventConsumer.subscribe`): as they came.

# How long a poll that found nothing waits for records (FastStream then waits as long again
# before the next poll): what an idle consumer adds, at most, to a record's way.
POLL_WAIT_MS = 50


def records_subscriber(
    broker: KafkaBroker,
    topics: Sequence[str],
    *,
    group_id: str,
    settings: ServiceSettings,
    title: str,
    poll_max: int | None,
) -> Callable[[Callable[..., Awaitable[None]]], Any]:
    """The subscriber of `EventConsumer.consume`, from the earliest offset of its group.

    With `poll_max` (the consumer's lanes), what one poll brought (at most that many) is handed
    over at once, offsets committed by the lanes: FastStream's path for a message (its
    middlewares, context, parser, logging scope) runs once per poll, not once per record — it
    was a fifth of alerts' and consent's CPU. Without, one record at a time, FastStream
    committing after each."""
    options: dict[str, Any] = {
        "group_id": group_id,
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": settings.consumer_partition_fetch_bytes,
        "max_poll_interval_ms": settings.max_poll_interval_ms,
        "decoder": undecoded,
        "title": title,
    }
    if poll_max is None:
        return broker.subscriber(  # type: ignore[no-any-return]
            *topics, ack_policy=AckPolicy.NACK_ON_ERROR, parser=tolerant_parser, **options
        )
    return broker.subscriber(  # type: ignore[no-any-return]
        *topics,
        batch=True,
        max_records=poll_max,
        batch_timeout_ms=POLL_WAIT_MS,
        ack_policy=AckPolicy.MANUAL,
        parser=tolerant_batch_parser,
        **options,
    )


Parse = Callable[[ConsumerRecord[Any, Any]], Awaitable[StreamMessage[Any]]]


async def tolerant_parser(record: ConsumerRecord[Any, Any], original: Parse) -> StreamMessage[Any]:
    """FastStream's own parser, which decodes every header as UTF-8 and raises — before our
    consumer ever sees the record, so out of reach of its dead letters — on a header that is
    not UTF-8 or has no value. Such a record is parsed from a copy whose headers are made
    readable; the message still carries the original record, to be dead-lettered as it came."""
    try:
        return await original(record)
    except Exception:
        readable = copy.copy(record)
        readable.headers = [
            (name, (value or b"").decode("utf-8", "replace").encode())
            for name, value in record.headers
        ]
        message = await original(readable)
        message.raw_message = record
        return message


BatchParse = Callable[[tuple[ConsumerRecord[Any, Any], ...]], Awaitable[StreamMessage[Any]]]


async def tolerant_batch_parser(
    records: tuple[ConsumerRecord[Any, Any], ...], original: BatchParse
) -> StreamMessage[Any]:
    """A poll's records for our consumer, which reads each one itself: FastStream's batch
    parser is given the first alone (it would decode every header of every record, for a
    message nobody reads), made tolerant as above, and the message carries them all."""

    async def first(record: ConsumerRecord[Any, Any]) -> StreamMessage[Any]:
        return await original((record,))

    message = await tolerant_parser(records[0], first)
    message.raw_message = records
    return message


async def undecoded(message: StreamMessage[Any]) -> bytes:
    """The value left as bytes: FastStream would decode JSON itself first, and a value nested
    too deep for Python's parser raised RecursionError there, out of our consumer's reach, on
    every redelivery."""
    body: bytes = message.body
    return body
