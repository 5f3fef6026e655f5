"""Records handled concurrently across appointments, in order within each one.

A consumer handling one record at a time waits on every Graph call, SMTP exchange and database
round trip in turn. Lanes let up to `limit` records be in flight at once: each record joins the
lane of its key (the appointment id, which every event is keyed by), a lane runs its records one
after another, and different lanes run side by side. So one appointment's events keep their
order — on one partition or across the topics one subscriber reads — while others overtake.

Offsets: a partition's committed offset only ever moves to just past the first record not yet
finished on it (a watermark), so a crash or a rebalance redelivers everything unfinished, never
skips it; handlers are idempotent, and the redelivered records they already handled are skipped.
Commits are batched: a flusher commits each partition's watermark every `commit_interval_s`.

A record that fails transiently waits in its own lane (other appointments flow, its partition's
watermark stays behind it), then is tried again — at most `retry_attempts`, then dead-lettered,
as in the one-at-a-time mode.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.structs import OffsetAndMetadata

log = logging.getLogger(__name__)


Attempt = Callable[[ConsumerRecord[Any, Any], Any], Awaitable[Any]]


@dataclass
class _Track:
    """The records of one partition (as one consumer received them) not yet committed."""

    consumer: AIOKafkaConsumer
    tp: TopicPartition
    offsets: deque[_Entry] = field(default_factory=deque)
    committed: int | None = None  # what was last committed
    watermark: int | None = None  # what may be committed now


@dataclass
class _Entry:
    offset: int
    track: _Track
    done: bool = False


class Lanes:
    def __init__(
        self,
        attempt: Attempt,
        is_retry: Callable[[Any], bool],
        on_error: Callable[[ConsumerRecord[Any, Any], Any], Any],
        limit: int,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        commit_interval_s: float = 0.2,
    ) -> None:
        self._attempt = attempt
        self._is_retry = is_retry
        self._on_error = on_error  # what to do when the attempt itself raises
        self._slots = asyncio.Semaphore(limit)
        self._sleep = sleep
        self._commit_interval_s = commit_interval_s
        self._lanes: dict[object, deque[tuple[ConsumerRecord[Any, Any], _Entry]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._tracks: dict[TopicPartition, _Track] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closing = False  # draining: a record to retry is left, not retried
        self.in_flight = 0
        self.waiting_to_retry = 0

    async def dispatch(self, record: ConsumerRecord[Any, Any], consumer: AIOKafkaConsumer) -> None:
        """Queue `record` in its lane; waits only while `limit` records are already in flight
        (back-pressure: the consumer stops fetching rather than buffering without end)."""
        await self._slots.acquire()
        self.in_flight += 1
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_forever(), name="lanes-commit")
        tp = TopicPartition(record.topic, record.partition)
        track = self._tracks.get(tp)
        if (
            track is None
            or track.consumer is not consumer
            or (track.offsets and record.offset <= track.offsets[-1].offset)
            or (track.watermark is not None and record.offset < track.watermark)
        ):
            # A new assignment, or the partition was sought back (a rebalance, a restart of
            # its fetch): what was tracked before no longer says where this partition is.
            track = _Track(consumer, tp)
            self._tracks[tp] = track
        entry = _Entry(record.offset, track)
        track.offsets.append(entry)
        key: object = record.key if record.key is not None else tp
        lane = self._lanes.get(key)
        if lane is None:
            lane = deque()
            self._lanes[key] = lane
            task = asyncio.create_task(self._run(key, lane))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        lane.append((record, entry))

    async def _run(self, key: object, lane: deque[tuple[ConsumerRecord[Any, Any], _Entry]]) -> None:
        try:
            while lane:
                record, entry = lane[0]
                finished = False
                try:
                    finished = await self._handle(record)
                finally:
                    lane.popleft()
                    # Left unfinished (shutting down): its partition's commit stays behind it.
                    entry.done = finished
                    self._advance(entry.track)
                    self.in_flight -= 1
                    self._slots.release()
        finally:
            if self._lanes.get(key) is lane:
                del self._lanes[key]

    async def _handle(self, record: ConsumerRecord[Any, Any]) -> bool:
        """True once the record is done with; False when it was left to retry because the
        lanes are closing (whoever owns its partition next gets it again)."""
        failure = None
        while True:
            try:
                outcome = await self._attempt(record, failure)
            except Exception:
                outcome = self._on_error(record, failure)
            if not self._is_retry(outcome):
                return True
            if self._closing:
                return False
            failure = outcome.failure
            self.waiting_to_retry += 1
            try:
                await self._sleep(outcome.delay)
            finally:
                self.waiting_to_retry -= 1
            if self._closing:
                return False

    def _advance(self, track: _Track) -> None:
        moved = False
        while track.offsets and track.offsets[0].done:
            track.watermark = track.offsets.popleft().offset + 1
            moved = True
        if moved:
            self._wake.set()

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()
            await asyncio.sleep(self._commit_interval_s)  # batching commits, not syncing

    async def flush(self) -> None:
        """Commit every partition's watermark that moved since its last commit."""
        by_consumer: dict[int, tuple[AIOKafkaConsumer, dict[TopicPartition, _Track]]] = {}
        for tp, track in list(self._tracks.items()):
            if track.watermark is None or track.watermark == track.committed:
                continue
            found = by_consumer.setdefault(id(track.consumer), (track.consumer, {}))
            found[1][tp] = track
        for consumer, tracks in by_consumer.values():
            owned = consumer.assignment()
            offsets = {
                tp: OffsetAndMetadata(track.watermark, "")
                for tp, track in tracks.items()
                if tp in owned and track.watermark is not None
            }
            for tp in set(tracks) - set(offsets):
                # Revoked: its new owner starts from the last commit; ours stops here.
                self._tracks.pop(tp, None)
            if not offsets:
                continue
            try:
                await consumer.commit(offsets)
            except Exception as exc:  # a rebalance under way: the next owner redelivers
                log.info("lanes: commit deferred (%s)", type(exc).__name__)
                continue
            for tp, meta in offsets.items():
                tracks[tp].committed = meta.offset

    async def drain(self, timeout_s: float) -> None:
        """Let the records in flight finish (within `timeout_s`), then commit; on shutdown. A
        record waiting to retry is not tried again: left uncommitted, it goes to the next
        owner of its partition."""
        self._closing = True
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)
        await self.flush()
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
