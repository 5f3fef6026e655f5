"""How a consumed record fails (visio_runtime.consumer): how often it has failed so far, when
to try it again, the dead letter it gets when the consumer gives up, and what a log line may
say of the failure."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pydantic
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from visio_runtime.dead_letters import DeadLetter, DeadLetters
from visio_runtime.errors import Poison, RetryPolicy, Transient, classify
from visio_runtime.json_input import Unreadable
from visio_runtime.metrics import ConsumerMetrics

# The consumer's logger: these lines are the consumer's, as they were before this module.
log = logging.getLogger("visio_runtime.consumer")

# A header value is put on every log line of its record: never more than this of it.
_LOGGED_HEADER_CHARS = 80

GaveUp = Callable[[ConsumerRecord[Any, Any], DeadLetter], Awaitable[None]]


@dataclass(frozen=True)
class Failure:
    """How one message has failed so far, carried from one attempt to the next."""

    attempts: int
    first_failed_at: datetime


@dataclass(frozen=True)
class RetryLater:
    delay: float
    failure: Failure


def one_more(failure: Failure | None) -> Failure:
    """The failures so far, with the one that just happened."""
    return Failure(
        attempts=failure.attempts + 1 if failure else 1,
        first_failed_at=failure.first_failed_at if failure else now(),
    )


def letter_for(exc: Exception, failure: Failure) -> DeadLetter:
    """The dead letter of a record the consumer gives up on after `failure`."""
    reason = describe(exc)
    if classify(exc) != "poison":
        reason = f"gave up after {failure.attempts} attempts: {reason}"
    return DeadLetter(
        reason,
        type(exc).__name__,
        failure.attempts,
        failure.first_failed_at,
        unavailable=getattr(exc, "dependency", None) if isinstance(exc, Transient) else None,
    )


@dataclass(frozen=True)
class Failing:
    """Turns a failed attempt into its next step: a retry later, or (poison at once, anything
    else past the retries) a dead letter, then the handler's follow-up of it."""

    service: str
    policy: RetryPolicy
    count: ConsumerMetrics
    dead_letters: Callable[[], DeadLetters]  # on whichever broker the consumer has now

    async def failed(
        self,
        record: ConsumerRecord[Any, Any],
        headers: dict[str, str],
        exc: Exception,
        failure: Failure | None,
        labels: dict[str, str],
        gave_up: GaveUp | None,
    ) -> str | RetryLater:
        failure = one_more(failure)
        error_class = type(exc).__name__
        self.count.failed.labels(**labels, error_class=error_class).inc()
        if self.policy.gives_up(exc, failure.attempts):
            letter = letter_for(exc, failure)
            await self.dead_letters().write(
                record, headers, letter, label=labels["event_type"], summary=loggable(exc)
            )
            if gave_up is not None:
                try:
                    await gave_up(record, letter)
                except Exception:  # the letter is written: never write it again for this
                    log.exception(
                        "%s: %s could not follow up its dead letter",
                        self.service,
                        labels["event_type"],
                    )
            return "dead_lettered"
        delay = self.policy.delay(failure.attempts, exc)
        log.warning(
            "%s: %s on %s (attempt %d), retrying in %.2fs",
            self.service,
            error_class,
            labels["event_type"],
            failure.attempts,
            delay,
        )
        self.count.retried.labels(**labels).inc()
        return RetryLater(delay, failure)


def hold(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int, delay: float) -> None:
    """Hold a partition back at `offset` for `delay` seconds (the consumer's module docstring):
    rewound to it and paused, the consumer polling on meanwhile."""
    consumer.seek(tp, offset)
    consumer.pause(tp)
    asyncio.get_running_loop().call_later(delay, _release, consumer, tp)


def _release(consumer: AIOKafkaConsumer, tp: TopicPartition) -> None:
    # Revoked meanwhile (or stopped): whoever owns the partition now starts it unpaused.
    if tp in consumer.assignment():
        consumer.resume(tp)


def now() -> datetime:
    return datetime.now(UTC)


def loggable(exc: BaseException) -> str:
    """What a log line may say of a failure. A handler's exception text may quote a person
    (an SMTP refusal naming the address, a name in a message), and names cannot be told apart
    from other words: only the class, and for invalid payloads the fields, which we wrote."""
    if isinstance(exc, pydantic.ValidationError | Unreadable):
        return describe(exc)
    return f"{type(exc).__name__} (reason in the dead letter's dlq.reason header)"


def loggable_header(headers: dict[str, str], name: str) -> str | None:
    value = headers.get(name)
    return value[:_LOGGED_HEADER_CHARS] if value is not None else None


def describe(exc: BaseException) -> str:
    if isinstance(exc, pydantic.ValidationError):
        fields = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(root)'}: {error['msg']}"
            for error in exc.errors(include_url=False)
        )
        return f"invalid {exc.title}: {fields}"
    if isinstance(exc, Poison):  # our own words, for an operator (the class is in dlq.error_class)
        return str(exc)
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"
