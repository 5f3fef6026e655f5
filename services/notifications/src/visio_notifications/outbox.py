"""Events written beside the row that caused them, published after the commit (a small
outbox): the text messages' SmsFailed and the bounces' NotificationFailed. The dispatch log's
own outcomes go through `handlers.publish_outcomes`, which publishes per appointment."""

from __future__ import annotations

from typing import Literal

from visio_shared import parse_event, publish_events

from visio_notifications.deps import NotificationsDeps

# (table, column holding the event): fixed names, never from input.
Outbox = Literal["sms_messages.failure_event", "bounces.event"]


async def publish_pending(deps: NotificationsDeps, outbox: Outbox, batch: int = 100) -> int:
    """Publish the events of `outbox` Kafka does not have yet; returns how many. Rows another
    replica holds are skipped; a crash between the publish and the commit publishes again,
    with the same event_id (consumers de-duplicate on it)."""
    table, column = outbox.split(".")
    async with deps.pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            f"SELECT id, {column}::text AS event FROM {table} "
            f"WHERE {column} IS NOT NULL AND published_at IS NULL "
            "ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
            batch,
        )
        if not rows:
            return 0
        events = [parse_event(row["event"]) for row in rows]
        await publish_events(deps.publisher, deps.topics.notifications, events)
        await conn.execute(
            f"UPDATE {table} SET published_at = now() WHERE id = ANY($1::bigint[])",
            [row["id"] for row in rows],
        )
    return len(rows)
