"""The one way a service keeps a record it cannot process: on its dead-letter topic
`<prefix>.<service>.dlq`, with the record's key, value and headers as they came, where it came
from (topic, partition, offset, group) and why (`dlq.*` headers), so ops can read and replay it.

A letter must always fit on the broker, or the record could never be set aside and its
partition would stall: a value past `dlq_max_value_bytes` (a key past 1 KiB) is cut to that
size, the cut said in `dlq.truncated` (the original sizes) — such a letter is kept to be read,
not replayed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker
from visio_shared import Headers, Topics

from visio_runtime.metrics import ConsumerMetrics

log = logging.getLogger(__name__)

MAX_KEY_BYTES = 1024


@dataclass(frozen=True)
class DeadLetter:
    reason: str
    error_class: str
    attempts: int
    first_failed_at: datetime
    unavailable: str | None = None  # the dependency that did not answer, if that was why


class DeadLetters:
    """Writes one service's dead letters (and counts and logs each)."""

    def __init__(
        self,
        service: str,
        topics: Topics,
        broker: KafkaBroker,
        count: ConsumerMetrics,
        max_value_bytes: int,
        groups: Mapping[str, str] | None = None,
    ) -> None:
        self.service = service
        self.topics = topics
        self.broker = broker
        self.count = count
        self.max_value_bytes = max_value_bytes
        # Topic → the group that reads it, where not the service's own (`subscribe(separately)`)
        self.groups = groups or {}

    @property
    def topic(self) -> str:
        return self.topics.dlq(self.service)

    async def write(
        self,
        record: ConsumerRecord[Any, Any],
        headers: dict[str, str],
        letter: DeadLetter,
        *,
        label: str,
        summary: str,
    ) -> None:
        """Publish the letter. `label` is the event-type label of the metrics; the log line
        says only `summary`, which names no one (the full reason, which may quote the payload,
        stays in the letter's `dlq.reason`). Raises when the broker does not take it: the
        caller holds the record and tries again."""
        value = record.value if record.value is not None else b""
        key = record.key
        letter_headers = {
            **headers,
            Headers.DLQ_SOURCE_TOPIC: record.topic,
            Headers.DLQ_SOURCE_PARTITION: str(record.partition),
            Headers.DLQ_SOURCE_OFFSET: str(record.offset),
            Headers.DLQ_CONSUMER_GROUP: self.groups.get(
                record.topic, self.topics.group(self.service)
            ),
            Headers.DLQ_ERROR_CLASS: letter.error_class,
            Headers.DLQ_REASON: letter.reason[:2000],
            Headers.DLQ_ATTEMPTS: str(letter.attempts),
            Headers.DLQ_FIRST_FAILED_AT: letter.first_failed_at.isoformat(),
            Headers.DLQ_DEAD_LETTERED_AT: datetime.now(UTC).isoformat(),
        }
        if letter.unavailable:
            letter_headers[Headers.DLQ_UNAVAILABLE] = letter.unavailable
        if len(value) > self.max_value_bytes or (key is not None and len(key) > MAX_KEY_BYTES):
            sizes = f"value {len(value)} bytes, key {len(key or b'')} bytes"
            letter_headers[Headers.DLQ_TRUNCATED] = sizes
            value = value[: self.max_value_bytes]
            key = key[:MAX_KEY_BYTES] if key is not None else None
        await self.broker.publish(value, self.topic, key=key, headers=letter_headers)
        self.count.dead_lettered.labels(
            topic=record.topic, event_type=label, error_class=letter.error_class
        ).inc()
        log.error(
            "%s: dead-lettered %s/%s@%s: %s",
            self.service,
            record.topic,
            record.partition,
            record.offset,
            summary,
        )
