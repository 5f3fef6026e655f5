"""Records handled together: the events that arrive within a short window (in practice, those of
one poll) go to their batch handler as one list, which writes them in one database transaction
and publishes what they cause as one produce batch. The cost of a hop — a transaction, a
round trip, a produce request — is then shared by every event that came with it.

The batcher sits under the lanes (visio_runtime.lanes) and changes none of their rules: each
lane hands over its head record and waits for that record's outcome before its next one, so a
batch holds at most one event per key (one appointment's events are still handled one at a
time, in order), and a partition's committed offset still never passes an unfinished record.

A batch that raises is split in two and each half tried again, down to the record that fails
alone: a poison record reaches the dead-letter topic by itself with its reason, a transient
failure holds back only its own record (its lane, its partition's watermark), and every
neighbour is handled exactly once — the failed attempts rolled back with their transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import Tracer

from visio_runtime import tracing

BatchHandler = Callable[[list[Any]], Awaitable[None]]


@dataclass(eq=False)
class BatchRoute:
    """One registered batch handler (`EventConsumer.on_batch`), shared by its event types."""

    handler: BatchHandler
    name: str


@dataclass(eq=False)
class Item:
    """One record handed to a batch: its event, and what the consumer needs to finish it."""

    event: Any
    context: Any  # the consumer's own (record, headers, labels, failure so far)
    trace: Context = field(default_factory=tracing.current)  # its record's span, for links
    outcome: asyncio.Future[Any] = field(default_factory=lambda: _loop().create_future())


# How a batch's outcome is told: each item handled, or one item failed alone with this error.
OnHandled = Callable[[Sequence[Item], float], None]
OnFailed = Callable[[Item, Exception], Awaitable[Any]]


def _loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


class Batcher:
    """Collects what the lanes submit, per route, for `window_s` after the first item (or until
    `max_size`), then runs the route's handler on them; at most `parallel` batches of a route
    at once, the next one filling meanwhile (a group commit): while they all run, what comes
    waits in one batch, which starts when one of them ends, however long that takes.

    Before, each window's items left as a batch of their own and queued for a slot: a service
    behind on its topics (notifications in a backlog, beside meetings and consent) handled
    batches of 15 events on average, a window's worth, paying a batch's transactions and
    round trips for each of them."""

    def __init__(
        self,
        on_handled: OnHandled,
        on_failed: OnFailed,
        window_s: float,
        max_size: int,
        parallel: int = 1,
        tracer: Tracer = tracing.NO_TRACER,
    ) -> None:
        self._on_handled = on_handled
        self._on_failed = on_failed
        self._window_s = window_s
        self._max_size = max_size
        self._parallel = parallel
        self._tracer = tracer
        self._pending: dict[BatchRoute, list[Item]] = {}
        self._timers: dict[BatchRoute, asyncio.TimerHandle] = {}
        self._running: dict[BatchRoute, int] = {}  # batches of the route started, not ended
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, route: BatchRoute, item: Item) -> Any:
        """Add `item` to the route's next batch; its outcome once that batch is done."""
        pending = self._pending.setdefault(route, [])
        pending.append(item)
        if len(pending) >= self._max_size:
            self._flush(route)
        elif route not in self._timers:
            loop = asyncio.get_running_loop()
            self._timers[route] = loop.call_later(self._window_s, self._flush, route)
        return await item.outcome

    def _flush(self, route: BatchRoute) -> None:
        """Start the route's pending items as batches (of `max_size` at most) while it has a
        free slot; with every slot taken they go on waiting, together, until one ends
        (`_run`)."""
        timer = self._timers.pop(route, None)
        if timer is not None:
            timer.cancel()
        pending = self._pending.get(route, [])
        while pending and self._running.get(route, 0) < self._parallel:
            items = pending[: self._max_size]
            del pending[: self._max_size]
            self._running[route] = self._running.get(route, 0) + 1
            task = asyncio.create_task(self._run(route, items), name=f"batch-{route.name}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if not pending:
            self._pending.pop(route, None)

    async def _run(self, route: BatchRoute, items: list[Item]) -> None:
        try:
            try:
                await self._split(route, items)
            finally:
                self._running[route] -= 1
        except BaseException as exc:  # cancelled, or a bug here: no lane may wait for ever
            for item in items:
                if not item.outcome.done():
                    item.outcome.set_exception(exc)
            if not isinstance(exc, Exception):
                raise  # cancelled (the service stops): nothing more is started
        # What came while every slot was taken has waited long enough: it goes now.
        self._flush(route)

    async def _split(self, route: BatchRoute, items: list[Item]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        events = [item.event for item in items]
        try:
            with tracing.batch_span(
                self._tracer, f"batch {route.name}", events, [item.trace for item in items]
            ):
                await route.handler(events)
        except Exception as exc:  # rolled back: find the record that fails, alone
            if len(items) == 1:
                item = items[0]
                try:
                    item.outcome.set_result(await self._on_failed(item, exc))
                except Exception as failed:  # its dead letter could not be written
                    item.outcome.set_exception(failed)
                return
            middle = len(items) // 2
            await self._split(route, items[:middle])
            await self._split(route, items[middle:])
            return
        self._on_handled(items, loop.time() - started)
        for item in items:
            item.outcome.set_result("handled")
