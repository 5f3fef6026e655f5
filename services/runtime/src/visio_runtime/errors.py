"""Failures, classified once for every service.

- `Poison`: the message can never succeed (not JSON, invalid payload of a known type). It goes
  to the service's dead-letter topic at once.
- `Transient`: the outside world may answer better later (network, 5xx, 429, SMTP 4xx, a
  database restart). Retried with growing delays, then dead-lettered, from where ops replay.
- Anything else is a bug or an unforeseen answer: retried the same bounded way, then
  dead-lettered with its class and message, so the partition moves on and nothing is lost.

Permanent business failures (Graph refuses the advisor, an address that bounces) are not
exceptions: handlers turn them into failure events (`MeetingFailed`, `NotificationFailed`).

`RetryPolicy` is how long and how often: every consumer of every service retries by it,
booking's inbound requests included.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import asyncpg
import pydantic

from visio_runtime.settings import ServiceSettings


class Poison(Exception):
    """This message can never be processed."""


class Transient(Exception):
    """This message may be processed later; `retry_after` is the peer's own hint, if any.
    `dependency` names the outside party that did not answer (`graph`, `smtp`): a message
    dead-lettered for it says so (`dlq.unavailable`), and is replayed by `visio-rdv ops heal`
    once that party answers again."""

    def __init__(
        self, message: str, retry_after: float | None = None, dependency: str | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.dependency = dependency


def classify(exc: BaseException) -> str:
    """'poison' or 'retry'."""
    if isinstance(exc, Poison | pydantic.ValidationError | UnicodeDecodeError):
        return "poison"
    if isinstance(exc, asyncpg.DataError | asyncpg.IntegrityConstraintViolationError):
        # The same row will violate the same constraint every time.
        return "poison"
    if isinstance(exc, Transient | OSError | asyncio.TimeoutError | asyncpg.PostgresError):
        return "retry"
    return "retry"


@dataclass(frozen=True)
class RetryPolicy:
    """At most `attempts` tries, `initial_delay_s` doubling up to `max_delay_s` between them
    (a peer's Retry-After raising it), with jitter so that replicas do not retry in step."""

    attempts: int
    initial_delay_s: float
    max_delay_s: float

    @classmethod
    def of(cls, settings: ServiceSettings) -> RetryPolicy:
        return cls(
            settings.retry_attempts, settings.retry_initial_delay_s, settings.retry_max_delay_s
        )

    def gives_up(self, exc: BaseException, attempts: int) -> bool:
        """True: dead-letter now (poison, or the last attempt failed)."""
        return classify(exc) == "poison" or attempts >= self.attempts

    def delay(self, attempt: int, exc: BaseException) -> float:
        """Seconds before try `attempt + 1`."""
        hinted = exc.retry_after if isinstance(exc, Transient) else None
        delay: float = self.initial_delay_s * 2 ** (attempt - 1)
        if hinted is not None:
            delay = max(delay, hinted)
        return min(delay, self.max_delay_s) * random.uniform(0.8, 1.2)
