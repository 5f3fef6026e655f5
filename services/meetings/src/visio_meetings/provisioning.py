"""Meetings made together: the handlers of appointments in the making at the same time (the
consumer runs up to `consumer_concurrency` at once, each under its appointment's lock) hand
their meeting to one `Provisioner`, which makes all those that arrive within a few
milliseconds with one `provision_many`, its steps in shared JSON batches. Each handler gets
its own meeting's outcome; a failure is only that meeting's.

A runtime that hands meetings a whole batch of records at once calls `provision_many`
directly with their specs; this gathering is for handlers that come one record at a time.
"""

from __future__ import annotations

import asyncio
import logging

from visio_meetings.graph import GraphClient
from visio_meetings.graph_batches import MAX_BATCH
from visio_meetings.meeting import Created, provision_many
from visio_meetings.payloads import MeetingSpec

log = logging.getLogger(__name__)

_Waiting = tuple[MeetingSpec, "asyncio.Future[Created]"]


class Provisioner:
    def __init__(
        self, graph: GraphClient, *, window_s: float = 0.005, most: int = MAX_BATCH
    ) -> None:
        self._graph = graph
        self._window_s = window_s
        self._most = most
        self._waiting: list[_Waiting] = []
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def provision(self, spec: MeetingSpec) -> Created:
        """This meeting, made with whichever others arrive within the window; raises what
        stopped it (`GraphRefused`, `Transient`…)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Created] = loop.create_future()
        self._waiting.append((spec, future))
        if len(self._waiting) >= self._most:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._window_s, self._flush)
        return await future

    async def aclose(self) -> None:
        """Stop the batches under way (their handlers are being stopped too)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in self._running:
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        gathered, self._waiting = self._waiting, []
        # A handler stopped while waiting has nobody to answer: its meeting is not made.
        gathered = [(spec, future) for spec, future in gathered if not future.done()]
        if not gathered:
            return
        task = asyncio.get_running_loop().create_task(self._make(gathered))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _make(self, gathered: list[_Waiting]) -> None:
        try:
            outcomes = await provision_many(self._graph, [spec for spec, _ in gathered])
        except Exception as exc:  # the token, say: every meeting of the batch shares it
            for _, future in gathered:
                if not future.done():
                    future.set_exception(exc)
            return
        except asyncio.CancelledError:
            for _, future in gathered:
                future.cancel()
            raise
        log.debug("meetings: %d meetings made together", len(gathered))
        for (_, future), outcome in zip(gathered, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
