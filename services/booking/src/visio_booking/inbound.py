"""Requests on Kafka, from systems that emit rather than call: each one gets an answer —
`BookingAccepted` or `BookingRejected` with the same problem the HTTP API would give. A dead
letter is not an answer, so only a message that names no request at all (no `request_id` in its
body or headers) is dead-lettered, unanswered.

Each declared partner writes its own topic, `booking-requests.<system>.v1`, which only its
broker principal may write: the topic is the caller (`kafka:<system>`, a namespace no API key
can enter), a `calling_system` that names anyone else is refused, and the answer goes to that
partner's `booking-replies.<system>.v1` alone. No Kafka caller is ever an admin: changing every
caller's appointments takes an API key with `appointments:admin`.

The shared `booking-requests.v1`, where the caller is whatever the message says and the answer
goes to the shared `booking-replies.v1`, is read only behind `shared_requests_topic`, for a
deprecation window; every message on it is counted (`booking_shared_topic_requests_total`) and
logged as a warning.

Records reach `InboundRequests` through the service's shared consumer (`EventConsumer.on_topic`),
so they are retried and dead-lettered by the same policy and writer as every other record: an
outage of booking's database holds the partition back and retries, then dead-letters the
request — answered all the same, 503, so the caller knows to send it again. Who the caller is
gets decided in one place, `identify`.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

import pydantic
from aiokafka import ConsumerRecord
from visio_runtime import defects
from visio_runtime.dead_letters import DeadLetter
from visio_runtime.errors import Poison
from visio_runtime.json_input import Unreadable, duplicate_keys, read_json
from visio_runtime.problems import Problem, as_problem, invalid, too_large
from visio_runtime.service import Runtime
from visio_shared import Headers
from visio_shared.booking_replies import (
    BookingAccepted,
    BookingRejected,
    BookingReply,
    FieldError,
    partner_reply_key,
    reply_correlation,
    reply_key,
)
from visio_shared.booking_requests import (
    CALLING_SYSTEM_HEADER,
    REQUEST_ID_HEADER,
    REQUEST_TYPES,
    RequestEnvelope,
    kafka_caller,
)

from visio_booking.appointments import Caller, Command, Context
from visio_booking.idempotency import Outcome
from visio_booking.intake import execute
from visio_booking.outbox import OutboxRow, enqueue
from visio_booking.settings import BookingSettings

log = logging.getLogger(__name__)

# What the consumer's metrics call these records (they carry no event_type).
LABEL = "BookingRequest"


@dataclass(frozen=True)
class Identity:
    """What can be read of a request before it is validated: enough to answer it."""

    request_id: str | None
    # The caller: the topic's partner; on the shared topic, what the message claims.
    calling_system: str | None
    partner: str | None  # the partner whose own topic this is; None on the shared topic
    claimed: str | None  # the `calling_system` the message gives (body, else header)
    request_type: str | None
    appointment_id: uuid.UUID | None
    body: Any  # the decoded JSON, or None if the value is not JSON (or too large to read)
    problem: Problem | None  # why the value cannot be a request, before any field is looked at


def identify(record: ConsumerRecord[Any, Any], max_bytes: int, partner: str | None) -> Identity:
    """Who sent this and which request it is — the one place that decides the caller: the
    partner whose topic it is; on the shared topic, the envelope's `calling_system`, else the
    header of that name — whatever the record holds. Never raises."""
    headers = Headers.decode(record.headers)
    value: bytes = record.value or b""
    body, problem = None, None
    if len(value) > max_bytes:
        problem = too_large(max_bytes)
    else:
        try:
            body = read_json(value)
        except Unreadable as exc:
            problem = Problem(400, "malformed", "Malformed JSON", f"the request is {exc.reason}")
    if problem is None and not isinstance(body, dict):
        problem = Problem(400, "malformed", "Malformed JSON", "the request is not a JSON object")
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
    claimed = text("calling_system", CALLING_SYSTEM_HEADER)
    return Identity(
        request_id=text("request_id", REQUEST_ID_HEADER),
        calling_system=partner or claimed,
        partner=partner,
        claimed=claimed,
        request_type=text("request_type"),
        appointment_id=appointment_id,
        body=body,
        problem=problem,
    )


class InboundRequests:
    """The `RecordHandler` of every request topic booking reads: each declared partner's, and
    the shared one if `shared_requests_topic` is on."""

    def __init__(self, runtime: Runtime, ctx: Context, settings: BookingSettings) -> None:
        self.runtime = runtime
        self.ctx = ctx
        self.settings = settings
        topics = runtime.topics
        # Request topic → the partner it belongs to (None: the shared topic).
        self.sources: dict[str, str | None] = {
            topics.partner_requests(partner): partner for partner in settings.partners
        }
        if settings.shared_requests_topic:
            self.sources[topics.booking_requests] = None

    async def handle(self, record: ConsumerRecord[Any, Any], headers: dict[str, str]) -> None:
        """Answer one record. Raises `Poison` when nobody can be answered, and whatever
        booking's own outage raises (the consumer retries)."""
        who = self._identify(record)
        if who.partner is None:
            self._warn_shared(who)
        if who.request_id is None:
            raise Poison("no request_id: nobody to answer")
        await self._answer(who, record)
        # A label from the contract only: a stranger's value must not mint series.
        kind = who.request_type if who.request_type in REQUEST_TYPES else "unknown"
        self.runtime.metrics.inc(
            "booking_requests_total", request_type=kind, partner=who.partner or "shared-topic"
        )

    async def gave_up(self, record: ConsumerRecord[Any, Any], letter: DeadLetter) -> None:
        """A request dead-lettered after its retries is kept for operators to replay, and
        answered all the same, straight to the broker (the database is what failed): the
        caller may send it again with the same request_id."""
        who = self._identify(record)
        if who.request_id is None:
            return
        problem = Problem(
            503,
            "unavailable",
            "Service Unavailable",
            "booking could not handle this request now; send it again with the same request_id",
        )
        reply = rejected(who, problem)
        await self.runtime.broker.publish(
            reply.to_json_bytes(),
            self._replies_to(who),
            key=self._reply_key(who, reply),
            headers=Headers.for_event(reply),
        )

    def _identify(self, record: ConsumerRecord[Any, Any]) -> Identity:
        return identify(record, self.settings.max_body_bytes, self.sources.get(record.topic))

    def _warn_shared(self, who: Identity) -> None:
        """Each request on the deprecated shared topic, counted and said: the operator sees who
        has not moved yet (a declared partner by name; any other value is not a label)."""
        declared = who.claimed if who.claimed in self.settings.partners else "undeclared"
        self.runtime.metrics.inc("booking_shared_topic_requests_total", calling_system=declared)
        log.warning(
            "a request on the deprecated shared topic %s (calling_system %s): the partner "
            "should move to its own topic (docs/partners.md)",
            self.runtime.topics.booking_requests,
            declared,
        )

    async def _answer(self, who: Identity, record: ConsumerRecord[Any, Any]) -> None:
        pool = self.runtime.db
        try:
            if who.problem is not None:
                raise who.problem
            repeated = duplicate_keys(record.value)
            if repeated:
                # The parser kept the last of each: a second calling_system would slip through.
                raise invalid(
                    [
                        {"field": _field(path), "message": "given more than once"}
                        for path in repeated
                    ]
                )
            check_caller(who)
            envelope = RequestEnvelope.model_validate(who.body)
            command = Command(
                request_type=envelope.request_type,
                payload=envelope.payload,
                appointment_id=envelope.appointment_id,
                idempotency_key=envelope.request_id,
            )

            def reply(outcome: Outcome) -> OutboxRow | None:
                if defects.once("DROP_REPLY"):  # tests of the proofs only: a reply lost
                    return None
                return self._reply_row(who, accepted(who, outcome))

            await execute(pool, self.ctx, caller_of(who), command, reply=reply)
        except (Problem, pydantic.ValidationError) as exc:
            refusal = as_problem(exc)
            assert refusal is not None
            row = self._reply_row(who, rejected(who, refusal))
            async with pool.acquire() as conn:
                await enqueue(conn, row.topic, row.event, row.key)

    def _replies_to(self, who: Identity) -> str:
        """Where the caller reads its answers: a partner's own reply topic, which no other
        partner may read; the shared one for a request on the shared topic."""
        if who.partner is not None:
            return self.runtime.topics.partner_replies(who.partner)
        return self.runtime.topics.booking_replies

    def _reply_key(self, who: Identity, reply: BookingReply) -> bytes:
        return partner_reply_key(reply) if who.partner is not None else reply_key(reply)

    def _reply_row(self, who: Identity, reply: BookingReply) -> OutboxRow:
        return OutboxRow(self._replies_to(who), reply, self._reply_key(who, reply))


def check_caller(who: Identity) -> None:
    """A partner speaks for itself only: on its own topic a `calling_system` that names anyone
    else is refused (403), before anything of the request is looked at. On the shared topic the
    message must name its caller, as it always had to."""
    if who.partner is not None:
        if who.claimed is not None and who.claimed != who.partner:
            raise Problem(
                403,
                "forbidden",
                "Forbidden",
                f"this topic is {who.partner}'s: a request on it cannot speak for {who.claimed!r}",
                errors=[
                    {
                        "field": "calling_system",
                        "message": f"must be {who.partner!r} (the system whose topic this is) "
                        "or left out",
                    }
                ],
            )
    elif who.claimed is None:
        raise invalid([{"field": "calling_system", "message": "Field required"}])


def caller_of(who: Identity) -> Caller:
    """The Kafka caller, in its own namespace; never an admin."""
    assert who.calling_system is not None  # check_caller passed
    return Caller(name=kafka_caller(who.calling_system), channel="kafka")


def _field(path: str) -> str:
    """A key's path as the HTTP API names it: a payload's fields without `payload.`."""
    return path.removeprefix("payload.") if path != "payload" else path


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
    """One consumer group for everything booking reads (`<prefix>.booking`, from the earliest
    offset, committed once a message is handled, answered or dead-lettered): requests go to
    `inbound`, the other services' events to their handlers.

    Fairness: one client per topic (`separately`), so each partner's topic is fetched on its
    own and a backlog on one cannot stand in front of another's requests; the clients then take
    turns for the consumer's handling slots (visio_runtime.lanes: a first-come queue, at most
    one record waiting per client), so each partner with work gets an equal share of booking,
    whatever the depth of another's backlog. Booking's status follower takes meetings' and
    notifications' events in any order (visio_booking.store.record_step), so they need not
    share a client either; nor does consent's `PersonalDataErased`, which only records a
    service's confirmation of an erasure (visio_booking.erasure)."""
    topics = runtime.topics
    for topic in inbound.sources:
        runtime.consumer.on_topic(topic, inbound, LABEL)
    runtime.consumer.subscribe(
        *inbound.sources, topics.meetings, topics.notifications, topics.consents, separately=True
    )
