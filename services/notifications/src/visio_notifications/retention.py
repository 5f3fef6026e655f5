"""Notifications' rows past the appointment retention period (public: `ops purge` asks it).
It keeps a copy per appointment; rows whose copy never came (or was forgotten) expire by their
own age."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import asyncpg
from visio_runtime.retention import Period, Rule, purge

_EXPIRED = "SELECT appointment_id FROM notifications.appointments WHERE start_at < $1"


def _without_copy(table: str, written: str) -> str:
    return (
        f"DELETE FROM notifications.{table} t WHERE t.appointment_id IN ({_EXPIRED})"
        f" OR (t.{written} < $1 AND NOT EXISTS (SELECT 1 FROM notifications.appointments a"
        " WHERE a.appointment_id = t.appointment_id))"
    )


# Dependent rows first: the expired set is read from the appointments table.
RULES = (
    Rule(
        "notifications.reminders",
        "appointment",
        "DELETE FROM notifications.reminders WHERE start_at < $1",
    ),
    Rule("notifications.dispatches", "appointment", _without_copy("dispatches", "recorded_at")),
    # No personal data (ids, the reason, the outcome), but it tells that the person asked:
    # it goes with the appointment's other rows.
    Rule(
        "notifications.link_requests", "appointment", _without_copy("link_requests", "requested_at")
    ),
    Rule("notifications.meetings", "appointment", _without_copy("meetings", "updated_at")),
    Rule(
        "notifications.appointments",
        "appointment",
        "DELETE FROM notifications.appointments WHERE start_at < $1",
    ),
)


async def purge_expired(
    conn: asyncpg.Connection, days: Mapping[Period, float], now: datetime, dry_run: bool = False
) -> dict[str, int]:
    """Rows removed per table (counted and rolled back on `dry_run`)."""
    return await purge(conn, RULES, days, now, dry_run)
