"""Booking follows the other services' events to tell callers where an appointment stands."""

from __future__ import annotations

import asyncpg
from visio_runtime.db import mark_processed
from visio_shared import (
    AppointmentEvent,
    MeetingFailed,
    MeetingReady,
    NotificationFailed,
    NotificationSent,
)

from visio_booking.store import move_status


async def follow_status(pool: asyncpg.Pool, event: AppointmentEvent) -> None:
    status, detail, join_url = _step(event)
    if status is None:
        return
    async with pool.acquire() as conn, conn.transaction():
        if not await mark_processed(conn, event.event_id, event.event_type):
            return
        await move_status(
            conn,
            event.appointment_id,
            event.revision,
            status,
            detail=detail,
            join_url=join_url,
            source_event_id=event.event_id,
        )


def _step(event: AppointmentEvent) -> tuple[str | None, str | None, str | None]:
    match event:
        case MeetingReady():
            return "meeting_ready", None, event.join_url
        case MeetingFailed():
            return "meeting_failed", f"{event.reason}: {event.detail}".rstrip(": "), None
        case NotificationSent(kind="confirmation"):
            return "confirmed", None, None
        case NotificationFailed(kind="confirmation"):
            return "notification_failed", f"{event.reason}: {event.detail}".rstrip(": "), None
    return None, None, None
