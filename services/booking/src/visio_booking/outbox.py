"""The transactional outbox and its relay: what a request committed is published, even if Kafka
was down when it was accepted, in the order it was committed for each appointment.

- One active relay per database: it holds a session-level advisory lock on a connection of its
  own, and does all its outbox work on that connection, so it cannot act without the lock.
  Other replicas wait, trying the lock, and one takes over within a second if the holder dies.
- Woken by `NOTIFY` (sent in the enqueuing transaction, so delivered on commit), with polling
  as the guarantee when a notification is missed.
- A row is marked published only once the broker acknowledged it (acks=all); a failure leaves
  it, and every later row of the same key, for the next round: per-key order holds.
- A row keeps the `traceparent` of the request that wrote it, and is published under it.
- At-least-once: a crash between the broker's ack and the mark publishes the same event again
  (same event_id); every consumer is idempotent by event_id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from visio_runtime import tracing
from visio_runtime.metrics import Metrics
from visio_shared import Envelope, Headers
from visio_shared.headers import event_key
from visio_shared.publishing import Publisher

log = logging.getLogger(__name__)

CHANNEL = "booking_outbox"
LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"visio-rdv:booking:outbox-relay").digest()[:8], "big", signed=True
)


@dataclass(frozen=True)
class OutboxRow:
    """An event bound for a topic, as the outbox keeps it: what `enqueue` writes, and what a
    statement that writes several tables at once (`store.book`) writes set-wise."""

    topic: str
    event: Envelope
    key: bytes | None = None

    def values(self) -> tuple[uuid.UUID, str, str, str, str]:
        """event_id, topic, key, payload, headers: the outbox's columns."""
        return (
            self.event.event_id,
            self.topic,
            (self.key or event_key(self.event)).decode(),
            self.event.model_dump_json(),
            # With tracing on, the request's trace context too: the relay publishes under it.
            json.dumps(tracing.stamp(Headers.for_event(self.event))),
        )


# The row and the relay's wake-up in one statement. The notification is delivered at commit,
# never for a rolled-back transaction; repeats in one transaction are merged.
ENQUEUE = f"""
WITH queued AS (
    INSERT INTO outbox (event_id, topic, key, payload, headers)
    VALUES ($1, $2, $3, $4, $5::jsonb)
    RETURNING 1
)
SELECT pg_notify('{CHANNEL}', '') FROM queued
"""


# Several rows and one wake-up, in their order (a key's rows keep it: ids follow the order).
ENQUEUE_MANY = f"""
WITH queued AS (
    INSERT INTO outbox (event_id, topic, key, payload, headers)
    SELECT o.event_id, o.topic, o.key, o.payload, o.headers::jsonb
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[])
        WITH ORDINALITY AS o(event_id, topic, key, payload, headers, turn)
    ORDER BY o.turn
    RETURNING 1
)
SELECT pg_notify('{CHANNEL}', '') FROM queued LIMIT 1
"""


async def enqueue(
    conn: asyncpg.Connection, topic: str, event: Envelope, key: bytes | None = None
) -> None:
    """Write the event to the outbox, in the caller's transaction; the relay publishes it."""
    await conn.execute(ENQUEUE, *OutboxRow(topic, event, key).values())


async def enqueue_many(conn: asyncpg.Connection, rows: Sequence[OutboxRow]) -> None:
    """`enqueue` of several rows in one statement, in their order."""
    if not rows:
        return
    values = [row.values() for row in rows]
    await conn.execute(ENQUEUE_MANY, *([row[i] for row in values] for i in range(5)))


# The oldest unpublished rows, each topic taking its turn: the first row of every topic, then
# the second of every topic, and so on (each topic's in id order, so one key's rows keep their
# order). A backlog on one topic — one partner's flood of replies — then cannot stand in front
# of another topic's rows: the other partner's reply goes out in the next batch. Topics are
# found by skipping through the (topic, id) index, one probe per topic with unpublished rows.
FAIR_BATCH = """
WITH RECURSIVE topics(topic) AS (
    (SELECT topic FROM outbox WHERE published_at IS NULL ORDER BY topic LIMIT 1)
    UNION ALL
    SELECT (SELECT o.topic FROM outbox o
            WHERE o.published_at IS NULL AND o.topic > topics.topic
            ORDER BY o.topic LIMIT 1)
    FROM topics WHERE topics.topic IS NOT NULL
)
SELECT t.id, t.topic, t.key, t.payload, t.headers
FROM topics
CROSS JOIN LATERAL (
    SELECT o.id, o.topic, o.key, o.payload, o.headers,
           row_number() OVER (ORDER BY o.id) AS turn
    FROM outbox o
    WHERE o.published_at IS NULL AND o.topic = topics.topic
    ORDER BY o.id LIMIT $1
) AS t
WHERE topics.topic IS NOT NULL
ORDER BY t.turn, t.id
LIMIT $1
"""


@dataclass(frozen=True)
class RelaySettings:
    batch_size: int = 200
    poll_interval_s: float = 0.5
    standby_interval_s: float = 1.0
    publish_timeout_s: float = 60.0
    max_backoff_s: float = 5.0
    outbox_retention_hours: int = 168
    idempotency_retention_days: int = 30
    purge_interval_s: float = 300.0


class PublishFailed(Exception):
    """Some rows were not acknowledged; they stay for the next round."""


class OutboxRelay:
    def __init__(
        self,
        dsn: str,
        publisher: Publisher,
        settings: RelaySettings,
        metrics: Metrics | None = None,
        schema: str = "booking",
    ) -> None:
        self.dsn = dsn
        self.publisher = publisher
        self.settings = settings
        self.metrics = metrics or Metrics("booking")
        self.schema = schema
        self.active = False  # holds the lock: the one relay publishing for this database
        self.backlog = self.metrics.gauge(
            "outbox_backlog", "Outbox rows not yet acknowledged by the broker."
        )
        self.oldest_age = self.metrics.gauge(
            "outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row (0 if none)."
        )
        self._wake = asyncio.Event()
        self._next_purge = 0.0

    async def run(self) -> None:
        """Relay for as long as the service runs; reconnect when PostgreSQL goes away."""
        backoff = self.settings.standby_interval_s
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox relay lost its connection (%s); reconnecting", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.settings.max_backoff_s)
            else:
                backoff = self.settings.standby_interval_s

    async def _session(self) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(
            self.dsn,
            server_settings={
                "search_path": self.schema,
                "application_name": "visio-rdv-booking-outbox-relay",
            },
        )
        try:
            await conn.add_listener(CHANNEL, self._on_notify)
            await self._take_lock(conn)
            self.active = True
            log.info("outbox relay active")
            await self._relay(conn)
        finally:
            # Closing the session releases the lock; another replica takes over.
            self.active = False
            await _close(conn)

    async def _take_lock(self, conn: asyncpg.Connection) -> None:
        """Standby until the lock is free. Polled rather than a blocking pg_advisory_lock, so a
        standby holds no query open and notices its own connection failing."""
        while True:
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
                return
            await asyncio.sleep(self.settings.standby_interval_s)

    async def _relay(self, conn: asyncpg.Connection) -> None:
        backoff = 0.2
        while True:
            try:
                published = await self.publish_batch(conn)
            except PublishFailed as exc:
                # The broker is away or refused: the rows stay; try again, less and less often.
                log.warning("outbox: %s; retrying in %.1fs", exc, backoff)
                self.metrics.inc("outbox_publish_failures_total")
                await self._measure_backlog(conn)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.settings.max_backoff_s)
                continue
            backoff = 0.2
            await self._purge(conn)
            if published < self.settings.batch_size:
                # Measured when caught up (or failing), not per batch: one query per idle round.
                await self._measure_backlog(conn)
                # asyncio.timeout, never wait_for: on Python 3.11, wait_for swallows a
                # cancellation that arrives as its awaitable finishes — a commit's NOTIFY
                # waking the relay as the service stops kept it relaying for ever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.poll_interval_s):
                        await self._wake.wait()

    async def _measure_backlog(self, conn: asyncpg.Connection) -> None:
        row = await conn.fetchrow(
            "SELECT count(*) AS rows, "
            "coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age "
            "FROM outbox WHERE published_at IS NULL"
        )
        self.backlog.set(row["rows"])
        self.oldest_age.set(float(row["age"]))

    def _on_notify(self, *_: Any) -> None:
        self._wake.set()

    async def publish_batch(self, conn: asyncpg.Connection) -> int:
        """Publish the oldest unpublished rows, topics taking turns; returns how many were
        read."""
        # Cleared before reading: a commit notified from now on wakes the next round.
        self._wake.clear()
        rows = await conn.fetch(FAIR_BATCH, self.settings.batch_size)
        acked = await self._publish_in_waves(rows)
        if acked:
            await conn.execute(
                "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])", acked
            )
            self.metrics.inc("outbox_published_total", len(acked))
        if len(acked) < len(rows):
            raise PublishFailed(f"{len(rows) - len(acked)} of {len(rows)} rows not acknowledged")
        return len(rows)

    async def _publish_in_waves(self, rows: list[asyncpg.Record]) -> list[int]:
        """Each wave sends the next row of every key at once, and waits for the broker: many
        appointments travel together, while one appointment's events go strictly one after the
        other. A key whose row failed sends nothing more this round."""
        queues: OrderedDict[tuple[str, str], deque[asyncpg.Record]] = OrderedDict()
        for row in rows:
            queues.setdefault((row["topic"], row["key"]), deque()).append(row)
        acked: list[int] = []
        while queues:
            wave = [queue[0] for queue in queues.values()]
            results = await asyncio.gather(
                *(self._publish(row) for row in wave), return_exceptions=True
            )
            for row, result in zip(wave, results, strict=True):
                slot = (row["topic"], row["key"])
                if isinstance(result, BaseException):
                    log.warning(
                        "outbox: %s to %s not acknowledged: %r", row["id"], row["topic"], result
                    )
                    del queues[slot]
                    continue
                acked.append(row["id"])
                queues[slot].popleft()
                if not queues[slot]:
                    del queues[slot]
        return acked

    async def _publish(self, row: asyncpg.Record) -> None:
        headers = json.loads(row["headers"])
        # Under the trace of the request that wrote the row (its `traceparent`), if any.
        with tracing.carried(headers):
            async with asyncio.timeout(self.settings.publish_timeout_s):
                await self.publisher.publish(
                    row["payload"].encode(), row["topic"], key=row["key"].encode(), headers=headers
                )

    async def _purge(self, conn: asyncpg.Connection) -> None:
        """Published rows hold personal data: they go after a while, as do old idempotency keys
        (the active relay is the one singleton, so housekeeping runs here)."""
        if time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + self.settings.purge_interval_s
        await conn.execute(
            "DELETE FROM outbox WHERE published_at < now() - make_interval(hours => $1)",
            self.settings.outbox_retention_hours,
        )
        await conn.execute(
            "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(days => $1)",
            self.settings.idempotency_retention_days,
        )
        # The self-service pages' rate limits count over an hour at most.
        await conn.execute("DELETE FROM rate_limits WHERE window_start < now() - interval '1 day'")


async def _close(conn: asyncpg.Connection) -> None:
    try:
        async with asyncio.timeout(5):
            await conn.close()
    except Exception:
        conn.terminate()
