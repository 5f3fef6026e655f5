"""Failures, classified once for every service.

- `Poison`: the message can never succeed (not JSON, invalid payload of a known type). It goes
  to the service's dead-letter topic at once.
- `Transient`: the outside world may answer better later (network, 5xx, 429, SMTP 4xx, a
  database restart). Retried with growing delays, then dead-lettered, from where ops replay.
- Anything else is a bug or an unforeseen answer: retried the same bounded way, then
  dead-lettered with its class and message, so the partition moves on and nothing is lost.

Permanent business failures (Graph refuses the advisor, an address that bounces) are not
exceptions: handlers turn them into failure events (`MeetingFailed`, `NotificationFailed`).
"""

from __future__ import annotations

import asyncio

import asyncpg
import pydantic


class Poison(Exception):
    """This message can never be processed."""


class Transient(Exception):
    """This message may be processed later; `retry_after` is the peer's own hint, if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


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
