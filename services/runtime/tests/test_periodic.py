"""A periodic task survives its failures, says so in the log and on /metrics, and keeps going."""

from __future__ import annotations

import asyncio
import logging

import pytest
from visio_runtime.metrics import Metrics
from visio_runtime.periodic import PeriodicMetrics, every


async def test_a_failed_round_is_logged_counted_and_the_next_round_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics("probe")
    counts = PeriodicMetrics(metrics)
    outcomes = iter([None, RuntimeError("database away"), None])
    rounds: list[int] = []
    waits: list[float] = []

    async def round_() -> None:
        rounds.append(len(rounds))
        outcome = next(outcomes)
        if outcome is not None:
            raise outcome

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            raise asyncio.CancelledError  # the service stops

    with caplog.at_level(logging.ERROR), pytest.raises(asyncio.CancelledError):
        await every("probe-task", 7.5, round_, counts, sleep=sleep)

    assert rounds == [0, 1, 2] and waits == [7.5, 7.5, 7.5]
    assert metrics.value("periodic_rounds_total", task="probe-task", outcome="ok") == 2
    assert metrics.value("periodic_rounds_total", task="probe-task", outcome="failed") == 1
    assert metrics.value("periodic_last_success_timestamp_seconds", task="probe-task") > 0
    [failure] = [r for r in caplog.records if "probe-task: round failed" in r.getMessage()]
    assert failure.exc_info is not None and "database away" in str(failure.exc_info[1])
