"""Booking's data past its retention period (public: `ops purge` asks it): an appointment and
its history expire with the appointment (its end plus the appointment period), the outbox's
published rows after the outbox period."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import asyncpg
from visio_runtime.retention import Period, Rule, purge

_EXPIRED = (
    "SELECT appointment_id FROM booking.appointments "
    "WHERE start_at + duration_minutes * interval '1 minute' < $1"
)

# Dependent rows first: the expired set is read from the appointments table.
RULES = (
    Rule(
        "booking.appointment_history",
        "appointment",
        f"DELETE FROM booking.appointment_history WHERE appointment_id IN ({_EXPIRED})",
    ),
    Rule(
        "booking.appointments",
        "appointment",
        f"DELETE FROM booking.appointments WHERE appointment_id IN ({_EXPIRED})",
    ),
    Rule("booking.outbox", "outbox", "DELETE FROM booking.outbox WHERE published_at < $1"),
)


async def purge_expired(
    conn: asyncpg.Connection, days: Mapping[Period, float], now: datetime, dry_run: bool = False
) -> dict[str, int]:
    """Rows removed per table (counted and rolled back on `dry_run`)."""
    return await purge(conn, RULES, days, now, dry_run)
