"""SMS delivery receipts: what the provider says of a text after it was sent (`on_receipt`),
recorded on the text; a hard bounce fails it for good. Sending is `visio_notifications.sms`."""

from __future__ import annotations

from datetime import datetime

import asyncpg
from visio_shared import SmsFailed

from visio_notifications.sms_metrics import SmsMetrics


async def on_receipt(
    pool: asyncpg.Pool,
    provider_id: str,
    status: str,
    detail: str,
    now: datetime,
    counters: SmsMetrics,
) -> bool:
    """A delivery receipt: recorded on its text; a hard bounce (no such number) fails it for
    good, which the Caf is told of. False when no text of ours has that id."""
    counters.receipts.labels(status).inc()
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT s.id, s.appointment_id, s.kind, s.revision, s.reminder_offset_minutes, "
            "s.status, a.correlation_id FROM sms_messages s "
            "LEFT JOIN appointments a USING (appointment_id) "
            "WHERE s.provider_id = $1 FOR UPDATE OF s",
            provider_id,
        )
        if row is None:
            return False
        await conn.execute(
            "UPDATE sms_messages SET delivery = $2, delivery_at = $3 WHERE id = $1",
            row["id"],
            status,
            now,
        )
        if status == "hard_bounce" and row["status"] != "failed":
            counters.failures.labels("hard_bounce").inc()
            event = SmsFailed(
                appointment_id=row["appointment_id"],
                revision=row["revision"],
                correlation_id=row["correlation_id"] or row["appointment_id"],
                kind=row["kind"],
                reason="hard_bounce",
                detail=detail[:500] or "the number does not exist or cannot receive texts",
                reminder_offset_minutes=row["reminder_offset_minutes"],
            )
            await conn.execute(
                "UPDATE sms_messages SET status = 'failed', failure_event = $2::jsonb "
                "WHERE id = $1",
                row["id"],
                event.model_dump_json(),
            )
    return True
