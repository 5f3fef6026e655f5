"""Logs stay small whatever happens: a line repeated word for word is written once per window
and the next one says how many were held back — in isolation, and for a consumer stuck in a
loop on the real broker (a record whose dead letter the broker refuses, tried again every
few milliseconds), whose log holds one line where it failed hundreds of times."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaProducer
from visio_runtime.logs import Repeats, configure_logging
from visio_runtime.service import build_runtime
from visio_runtime.settings import ServiceSettings
from visio_runtime.testing import running, wait_until


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(
    message: str, level: int = logging.ERROR, error: Exception | None = None
) -> logging.LogRecord:
    exc_info = (type(error), error, None) if error else None
    return logging.LogRecord("visio", level, __file__, 1, message, (), exc_info)


def test_a_repeated_line_is_written_once_per_window_then_with_its_count() -> None:
    clock = Clock()
    repeats = Repeats(window_s=60, kinds=2, clock=clock)
    stuck = [repeats.filter(record("could not dead-letter", error=OSError("refused")))
             for _ in range(10_000)]  # fmt: skip
    assert stuck.count(True) == 1

    # Other lines are not held back by it; below WARNING nothing is ever held back.
    assert repeats.filter(record("could not dead-letter", error=TimeoutError()))
    assert all(repeats.filter(record("handled", logging.INFO)) for _ in range(3))

    clock.now = 61
    again = record("could not dead-letter", error=OSError("refused"))
    assert repeats.filter(again) and again.repeated == 9_999  # type: ignore[attr-defined]
    assert not repeats.filter(record("could not dead-letter", error=OSError("refused")))

    # It remembers `kinds` lines at most: the oldest is forgotten, and written again.
    assert repeats.filter(record("a third line"))
    assert repeats.filter(record("could not dead-letter", error=TimeoutError()))
    assert repeats.filter(record("could not dead-letter", error=OSError("refused")))


Captured = tuple[io.StringIO, list[logging.LogRecord], Clock]


@pytest.fixture
def captured() -> Iterator[Captured]:
    """The service's own log, as configured in production, on a clock the test moves; and,
    beside it, every record logged, held back or not."""
    out = io.StringIO()
    handler = configure_logging("INFO", service="meetings", stream=out, repeat_window_s=60)
    clock = Clock()
    [repeats] = [f for f in handler.filters if isinstance(f, Repeats)]
    repeats.clock = clock
    every: list[logging.LogRecord] = []
    counter = logging.Handler()
    counter.emit = every.append  # type: ignore[method-assign]
    logging.getLogger().addHandler(counter)
    try:
        yield out, every, clock
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().removeHandler(counter)


async def test_a_consumer_stuck_in_a_loop_logs_one_line_with_a_count(
    kafka_bootstrap: str, captured: Captured
) -> None:
    out, every, clock = captured
    settings = ServiceSettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"loop-{uuid.uuid4().hex[:8]}",
        # The letter is not cut, and is too large for the service's producer: the broker
        # never takes it, so the record is held and tried again, every 10 ms.
        dlq_max_value_bytes=8 * 2**20,
        retry_max_delay_s=0.01,
    )
    rt = build_runtime("meetings", settings)
    rt.consumer.subscribe(rt.topics.meetings)
    async with running(rt):
        sender = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=4 * 2**20)
        await sender.start()
        try:
            await sender.send_and_wait(rt.topics.meetings, b"[" * 1_500_000, key=b"k")
        finally:
            await sender.stop()

        def stuck() -> list[logging.LogRecord]:
            return [r for r in every if "could not dead-letter" in r.getMessage()]

        await wait_until(lambda: len(stuck()) >= 200, what="two hundred failed tries")

        def written() -> list[dict[str, object]]:
            lines = [json.loads(line) for line in out.getvalue().splitlines()]
            return [line for line in lines if "could not dead-letter" in str(line["message"])]

        assert len(written()) == 1
        # A window later, the next line says how many tries it stands for.
        held = len(stuck()) - 1
        clock.now += 61
        counted = await wait_until(
            lambda: [line for line in written() if line.get("repeated")], what="a counted line"
        )
    tries = len(stuck())
    assert len(written()) == 2
    assert held <= int(str(counted[0]["repeated"])) < tries
    assert len(out.getvalue()) < 20_000
