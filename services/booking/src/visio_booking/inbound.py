"""Requests on `booking-requests.v1`, from systems that emit rather than call: each one gets an
answer on `booking-replies.v1` — `BookingAccepted` or `BookingRejected` with the same problem
the HTTP API would give. A dead letter is not an answer, so only a message that names no
request at all (no `request_id` in its body or headers) is dead-lettered, unanswered.

Kafka callers are authenticated by the broker (an ACL per system on the topic); the envelope's
`calling_system` is the caller's name for ownership and idempotency, as an API key's name is.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pydantic
from aiokafka import ConsumerRecord
from faststream.kafka.annotations import KafkaMessage
from faststream.middlewares import AckPolicy
from visio_runtime.errors import classify
from visio_runtime.service import Runtime
from visio_shared import Headers
from visio_shared.booking_requests import (
    CALLING_SYSTEM_HEADER,
    REQUEST_ID_HEADER,
    REQUEST_TYPES,
    BookingAccepted,
    BookingRejected,
    BookingReply,
    FieldError,
    RequestEnvelope,
    reply_correlation,
    reply_key,
)

from visio_booking.appointments import Caller, Command, Context
from visio_booking.idempotency import Outcome
from visio_booking.intake import execute
from visio_booking.outbox import enqueue
from visio_booking.problems import Problem, as_problem
from visio_booking.settings import BookingSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Identity:
    """What can be read of a request before it is validated: enough to answer it."""

    request_id: str | None
    calling_system: str | None
    request_type: str | None
    appointment_id: uuid.UUID | None
    body: Any  # the decoded JSON, or None if the value is not JSON


def identify(value: bytes | None, headers: dict[str, str]) -> Identity:
    try:
        body = json.loads(value or b"")
    except (ValueError, UnicodeDecodeError):
        body = None
    fields = body if isinstance(body, dict) else {}

    def text(name: str, header: str | None = None) -> str | None:
        found = fields.get(name)
        if isinstance(found, int) and not isinstance(found, bool):
            found = str(found)  # still refused by the envelope, but answerable
        if isinstance(found, str) and found:
            return found
        return (headers.get(header) or None) if header else None

    try:
        appointment_id = uuid.UUID(text("appointment_id") or "")
    except ValueError:
        appointment_id = None
    return Identity(
        request_id=text("request_id", REQUEST_ID_HEADER),
        calling_system=text("calling_system", CALLING_SYSTEM_HEADER),
        request_type=text("request_type"),
        appointment_id=appointment_id,
        body=body,
    )


class InboundRequests:
    def __init__(self, runtime: Runtime, ctx: Context, settings: BookingSettings) -> None:
        self.runtime = runtime
        self.ctx = ctx
        self.settings = settings

    async def process(self, record: ConsumerRecord[Any, Any]) -> str:
        """Answer one record; returns 'answered' or 'dead_lettered'."""
        headers = Headers.decode(record.headers)
        who = identify(record.value, headers)
        if who.request_id is None:
            await self._dead_letter(record, headers, "no request_id: nobody to answer", 1)
            return "dead_lettered"
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._answer(who, record)
                # A label from the contract only: a stranger's value must not mint series.
                kind = who.request_type if who.request_type in REQUEST_TYPES else "unknown"
                self.runtime.metrics.inc("booking_requests_total", request_type=kind)
                return "answered"
            except Exception as exc:  # a refusal is answered in _answer; this is an outage or a bug
                # Retried in place, bounded far below max.poll.interval.ms: what fails here is
                # booking's own database, without which nothing else on this consumer moves.
                if classify(exc) == "poison" or attempt >= self.settings.retry_attempts:
                    await self._give_up(record, headers, who, exc, attempt)
                    return "dead_lettered"
                delay = min(
                    self.settings.retry_initial_delay_s * 2 ** (attempt - 1),
                    self.settings.retry_max_delay_s,
                ) * random.uniform(0.8, 1.2)
                log.warning("booking request %s: %r, retrying in %.2fs", who.request_id, exc, delay)
                await asyncio.sleep(delay)

    async def _answer(self, who: Identity, record: ConsumerRecord[Any, Any]) -> None:
        pool = self.runtime.db
        try:
            problem = self._unreadable(who, record)
            if problem is not None:
                raise problem
            envelope = RequestEnvelope.model_validate(who.body)
            caller = Caller(
                name=envelope.calling_system,
                admin=envelope.calling_system in self.settings.inbound_admin_systems,
                channel="kafka",
            )
            command = Command(
                request_type=envelope.request_type,
                payload=envelope.payload,
                appointment_id=envelope.appointment_id,
                idempotency_key=envelope.request_id,
            )

            async def reply(conn: asyncpg.Connection, outcome: Outcome) -> None:
                await self._reply(conn, accepted(who, outcome))

            await execute(pool, self.ctx, caller, command, also=reply)
        except (Problem, pydantic.ValidationError) as exc:
            refusal = as_problem(exc)
            assert refusal is not None
            async with pool.acquire() as conn, conn.transaction():
                await self._reply(conn, rejected(who, refusal))

    def _unreadable(self, who: Identity, record: ConsumerRecord[Any, Any]) -> Problem | None:
        if len(record.value or b"") > self.settings.max_body_bytes:
            return Problem(
                413,
                "too-large",
                "Too Large",
                f"the request exceeds {self.settings.max_body_bytes} bytes",
            )
        if not isinstance(who.body, dict):
            return Problem(400, "malformed", "Malformed JSON", "the request is not a JSON object")
        return None

    async def _reply(self, conn: asyncpg.Connection, reply: BookingReply) -> None:
        await enqueue(conn, self.runtime.topics.booking_replies, reply, key=reply_key(reply))

    async def _give_up(
        self,
        record: ConsumerRecord[Any, Any],
        headers: dict[str, str],
        who: Identity,
        exc: BaseException,
        attempts: int,
    ) -> None:
        """Kept for operators to replay, and answered all the same, straight to the broker (the
        database is what failed): the caller may send it again with the same request_id."""
        reason = f"gave up after {attempts} attempts: {type(exc).__name__}: {exc}"
        await self._dead_letter(record, headers, reason, attempts, type(exc).__name__)
        problem = Problem(
            503,
            "unavailable",
            "Service Unavailable",
            "booking could not handle this request now; send it again with the same request_id",
        )
        reply = rejected(who, problem)
        await self.runtime.broker.publish(
            reply.to_json_bytes(),
            self.runtime.topics.booking_replies,
            key=reply_key(reply),
            headers=Headers.for_event(reply),
        )

    async def _dead_letter(
        self,
        record: ConsumerRecord[Any, Any],
        headers: dict[str, str],
        reason: str,
        attempts: int,
        error_class: str = "Poison",
    ) -> None:
        # The same headers as visio_runtime's dead letters, so ops replay them the same way.
        now = datetime.now(UTC).isoformat()
        topics = self.runtime.topics
        await self.runtime.broker.publish(
            record.value if record.value is not None else b"",
            topics.dlq(self.runtime.service),
            key=record.key,
            headers={
                **headers,
                Headers.DLQ_SOURCE_TOPIC: record.topic,
                Headers.DLQ_SOURCE_PARTITION: str(record.partition),
                Headers.DLQ_SOURCE_OFFSET: str(record.offset),
                Headers.DLQ_CONSUMER_GROUP: topics.group(self.runtime.service),
                Headers.DLQ_ERROR_CLASS: error_class,
                Headers.DLQ_REASON: reason[:2000],
                Headers.DLQ_ATTEMPTS: str(attempts),
                Headers.DLQ_FIRST_FAILED_AT: now,
                Headers.DLQ_DEAD_LETTERED_AT: now,
            },
        )
        self.runtime.metrics.inc(
            "events_dead_lettered_total",
            topic=record.topic,
            event_type="unknown",
            error_class=error_class,
        )
        log.error(
            "booking: dead-lettered %s/%s@%s: %s",
            record.topic,
            record.partition,
            record.offset,
            reason,
        )


def accepted(who: Identity, outcome: Outcome) -> BookingAccepted:
    body = outcome.body
    return BookingAccepted(
        correlation_id=reply_correlation(who.calling_system, who.request_id or ""),
        request_id=who.request_id or "",
        request_type=who.request_type,
        calling_system=who.calling_system,
        appointment_id=body["appointment_id"],
        revision=body["revision"],
        status=body["status"],
        replayed=outcome.replayed,
    )


def rejected(who: Identity, problem: Problem) -> BookingRejected:
    return BookingRejected(
        correlation_id=reply_correlation(who.calling_system, who.request_id or ""),
        request_id=who.request_id or "",
        request_type=who.request_type,
        calling_system=who.calling_system,
        appointment_id=who.appointment_id,
        status=problem.status,
        type=problem.type,
        title=problem.title,
        detail=problem.detail,
        errors=[FieldError(**error) for error in problem.errors],
    )


def subscribe(runtime: Runtime, inbound: InboundRequests) -> None:
    """One consumer for everything booking reads, so one group join (group `<prefix>.booking`,
    from the earliest offset, committed once a message is handled, answered or dead-lettered):
    requests are answered here; the other services' events go to the shared consumer, which
    holds a partition back to retry rather than sleeping."""
    topics = runtime.topics

    async def on_message(msg: KafkaMessage) -> None:
        record = msg.raw_message
        assert isinstance(record, ConsumerRecord)
        if record.topic == topics.booking_requests:
            await inbound.process(record)
        else:
            await runtime.consumer.consume(msg)

    runtime.broker.subscriber(
        topics.booking_requests,
        topics.meetings,
        topics.notifications,
        group_id=topics.group(runtime.service),
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        max_poll_interval_ms=runtime.settings.max_poll_interval_ms,
        # Small chunks take turns: a burst of requests must not hold the status events back.
        max_partition_fetch_bytes=runtime.settings.consumer_partition_fetch_bytes,
        title="booking:requests,meetings,notifications",
    )(on_message)
