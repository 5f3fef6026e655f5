"""One way for every service to do something every so often (a poller, a purge, a checkpoint):
a round, then a pause, until the service stops. A round that fails is logged with its traceback
and counted, and the next one tries again; a round never stops the loop, and nothing sleeps
between a failure and the log line an operator reads.

`visio_periodic_rounds_total{task, outcome}` counts rounds and
`visio_periodic_last_success_timestamp_seconds{task}` says when each task last got through, so
a task failing round after round shows on /metrics, not only in the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from visio_runtime.metrics import Metrics

log = logging.getLogger(__name__)

Round = Callable[[], Awaitable[Any]]


class PeriodicMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.rounds = metrics.counter(
            "periodic_rounds_total",
            "Rounds of a periodic task (a poller, a purge, a checkpoint), by outcome: a failed "
            "round is logged and tried again at the next",
            ["task", "outcome"],
        )
        self.last_success = metrics.gauge(
            "periodic_last_success_timestamp_seconds",
            "When the periodic task last finished a round without failing (Unix time)",
            ["task"],
        )


async def every(
    task: str,
    interval_s: float,
    round_: Round,
    counts: PeriodicMetrics,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Run `round_` every `interval_s` seconds (after each round ends) until cancelled."""
    while True:
        try:
            await round_()
        except Exception:  # the next round tries again; the service keeps running
            counts.rounds.labels(task=task, outcome="failed").inc()
            log.exception("%s: round failed; the next one tries again in %g s", task, interval_s)
        else:
            counts.rounds.labels(task=task, outcome="ok").inc()
            counts.last_success.labels(task=task).set(time.time())
        await sleep(interval_s)
