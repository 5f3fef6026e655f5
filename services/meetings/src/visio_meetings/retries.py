"""When to call Graph again, and how long to wait first.

Graph's throttling guidance: honour `Retry-After` (it sends decimals, `2.128`); without one,
back off exponentially. Jitter spreads the retries of many appointments throttled at once.
Only short waits are spent in process: a longer one, or one failure too many, is handed to the
shared consumer as `Transient`, whose own bounded retries (then the dead-letter topic) take
over, so a handler never sleeps past `max.poll.interval.ms`.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass
from datetime import UTC


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4  # calls of one request, the first included
    initial_delay_s: float = 0.5
    max_delay_s: float = 8.0
    max_in_process_wait_s: float = 5.0

    def wait_before_next(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait after failed attempt `attempt` (1-based), or None: hand over."""
        if attempt >= self.attempts:
            return None
        wait = retry_after if retry_after is not None else self.backoff(attempt)
        return wait if wait <= self.max_in_process_wait_s else None

    def backoff(self, attempt: int) -> float:
        # "Equal jitter": between half and all of the exponential step, never zero.
        step = min(self.max_delay_s, self.initial_delay_s * 2 ** (attempt - 1))
        return random.uniform(step / 2, step)


def retry_after(value: str | None) -> float | None:
    """Retry-After in seconds: delta-seconds (decimals included), or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - time.time())
