"""The outbox relay: what a request committed is published, even if Kafka was down when it
was accepted. At-least-once: a crash between publish and mark re-publishes the same event (same
event_id), and every consumer is idempotent by event_id."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

import asyncpg
from visio_shared.publishing import Publisher

log = logging.getLogger(__name__)


class OutboxRelay:
    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        publisher: Publisher,
        batch_size: int,
        poll_interval_s: float,
    ) -> None:
        self.pool = pool
        self.publisher = publisher
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Called after a commit that enqueued something: no need to wait for the next poll."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                published = await self.publish_batch()
            except Exception:
                # Kafka or PostgreSQL away: the rows stay unpublished and are tried again.
                log.exception("outbox relay failed; retrying")
                published = 0
                await asyncio.sleep(1.0)
            if published < self.batch_size:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval_s)
                except TimeoutError:
                    pass

    async def publish_batch(self) -> int:
        async with self.pool().acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT id, topic, key, payload, headers FROM outbox "
                "WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                self.batch_size,
            )
            for row in rows:
                await self.publisher.publish(
                    row["payload"].encode(),
                    row["topic"],
                    key=row["key"].encode(),
                    headers=json.loads(row["headers"]),
                )
            if rows:
                await conn.execute(
                    "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])",
                    [row["id"] for row in rows],
                )
        return len(rows)
