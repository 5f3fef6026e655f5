"""The batcher's group commit, on the real `Batcher` and event loop: while a route's batches all
run, what the lanes submit waits in one batch, which starts as soon as one of them ends — not
a window's worth at a time queued behind them — never more than `max_size` in a batch, never
more than `parallel` batches at once, and a quiet route's lone event still leaves after its
window."""

from __future__ import annotations

import asyncio
from typing import Any

from visio_runtime.batches import Batcher, BatchRoute, Item


class Handler:
    """A batch handler that records each batch and, while `gate` is shut, does not end."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.running = 0
        self.most_at_once = 0

    async def __call__(self, events: list[Any]) -> None:
        self.batches.append(list(events))
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await self.gate.wait()
        finally:
            self.running -= 1


async def _never(item: Item, exc: Exception) -> str:
    raise AssertionError(f"no batch fails here: {exc!r}")


def _batcher(max_size: int, parallel: int) -> Batcher:
    return Batcher(lambda items, seconds: None, _never, 0.005, max_size, parallel=parallel)


async def _submit(batcher: Batcher, route: BatchRoute, event: int) -> asyncio.Task[Any]:
    task = asyncio.ensure_future(batcher.submit(route, Item(event, None)))
    await asyncio.sleep(0)  # in the batcher's hands
    return task


async def test_what_comes_while_every_slot_is_taken_leaves_as_one_batch() -> None:
    handler = Handler()
    route = BatchRoute(handler, "follow")
    batcher = _batcher(max_size=500, parallel=2)
    first = [await _submit(batcher, route, n) for n in (1, 2)]
    await asyncio.sleep(0.02)  # a window: the first batch runs, and blocks
    second = [await _submit(batcher, route, 3)]
    await asyncio.sleep(0.02)  # the second slot taken too
    later = []
    for event in range(4, 40):  # many windows' worth, while both run
        later.append(await _submit(batcher, route, event))
        await asyncio.sleep(0.002)
    await asyncio.sleep(0.02)
    assert handler.batches == [[1, 2], [3]]
    handler.gate.set()
    assert await asyncio.gather(*first, *second, *later) == ["handled"] * 39
    assert handler.batches == [[1, 2], [3], list(range(4, 40))]
    assert handler.most_at_once == 2


async def test_a_batch_never_holds_more_than_max_size_nor_runs_beyond_parallel() -> None:
    handler = Handler()
    route = BatchRoute(handler, "follow")
    batcher = _batcher(max_size=10, parallel=1)
    tasks = [await _submit(batcher, route, 0)]
    await asyncio.sleep(0.02)
    tasks += [await _submit(batcher, route, n) for n in range(1, 26)]
    await asyncio.sleep(0.02)
    assert handler.batches == [[0]]  # the 25 wait: one slot, taken
    handler.gate.set()
    assert await asyncio.gather(*tasks) == ["handled"] * 26
    assert handler.batches == [[0], list(range(1, 11)), list(range(11, 21)), list(range(21, 26))]
    assert handler.most_at_once == 1


async def test_a_quiet_routes_event_leaves_after_its_window() -> None:
    handler = Handler()
    handler.gate.set()
    route = BatchRoute(handler, "follow")
    batcher = _batcher(max_size=500, parallel=2)
    task = await _submit(batcher, route, 7)
    async with asyncio.timeout(5):
        assert await task == "handled"
    assert handler.batches == [[7]]


async def test_a_stopped_batch_starts_nothing_more() -> None:
    handler = Handler()
    route = BatchRoute(handler, "follow")
    batcher = _batcher(max_size=500, parallel=1)
    running = await _submit(batcher, route, 1)
    await asyncio.sleep(0.02)
    waiting = await _submit(batcher, route, 2)
    await asyncio.sleep(0.02)
    for task in list(batcher._tasks):  # the service stops: its batches are cancelled
        task.cancel()
    await asyncio.sleep(0.02)
    assert handler.batches == [[1]]
    assert not batcher._tasks  # nothing started after the cancellation
    assert running.cancelled() or isinstance(running.exception(), asyncio.CancelledError)
    assert not waiting.done()
    waiting.cancel()
