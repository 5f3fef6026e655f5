"""The alerts' copy past the appointment retention period (public: `ops purge` asks it)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import asyncpg
from visio_runtime.retention import Period, Rule, purge

RULES = (
    Rule(
        "alerts.alerts",
        "appointment",
        "DELETE FROM alerts.alerts WHERE start_at < $1 OR (start_at IS NULL AND recorded_at < $1)",
    ),
    Rule(
        "alerts.appointments", "appointment", "DELETE FROM alerts.appointments WHERE start_at < $1"
    ),
    # Ids, kinds and times only, but they tell of the person's emails: as long as the rest.
    Rule(
        "alerts.emails_owed", "appointment", "DELETE FROM alerts.emails_owed WHERE owed_since < $1"
    ),
    Rule("alerts.emails_told", "appointment", "DELETE FROM alerts.emails_told WHERE told_at < $1"),
)


async def purge_expired(
    conn: asyncpg.Connection, days: Mapping[Period, float], now: datetime, dry_run: bool = False
) -> dict[str, int]:
    """Rows removed per table (counted and rolled back on `dry_run`)."""
    return await purge(conn, RULES, days, now, dry_run)
