"""`ops appointments --stuck / --failed`: read from booking's schema with an owner connection.
Stuck: not confirmed this long after it was booked. Failed: a meeting or an email failed for
good. Each with why (booking's status reason, else its last history entry), never with the
person's name or address: this output ends up in tickets and chat rooms."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

import asyncpg

WAITING = ("requested", "meeting_ready")
FAILED = ("meeting_failed", "notification_failed")


@dataclass(frozen=True)
class Appointment:
    appointment_id: str
    caf_code: str
    advisor: str
    start_at: datetime
    timezone: str
    status: str
    why: str
    booked_at: datetime
    updated_at: datetime


_QUERY = """
SELECT a.appointment_id::text, a.caf_code, a.advisor_name AS advisor, a.start_at, a.timezone,
       a.status, a.created_at AS booked_at, a.updated_at,
       coalesce(a.status_reason, last.detail, '') AS why
FROM booking.appointments a
LEFT JOIN LATERAL (
    SELECT detail FROM booking.appointment_history h
    WHERE h.appointment_id = a.appointment_id AND h.detail IS NOT NULL
    ORDER BY h.id DESC LIMIT 1
) last ON true
WHERE a.status = ANY($1::text[]) AND a.created_at < now() - $2::float8 * interval '1 minute'
ORDER BY a.created_at
"""


async def stuck(owner_dsn: str, after_minutes: float) -> list[Appointment]:
    return await _select(owner_dsn, WAITING, after_minutes)


async def failed(owner_dsn: str) -> list[Appointment]:
    return await _select(owner_dsn, FAILED, 0)


async def _select(owner_dsn: str, statuses: tuple[str, ...], minutes: float) -> list[Appointment]:
    conn = await asyncpg.connect(owner_dsn)
    try:
        rows = await conn.fetch(_QUERY, list(statuses), minutes)
    finally:
        await conn.close()
    found = [Appointment(**dict(row)) for row in rows]
    return [_explain_wait(a) if a.status in WAITING else a for a in found]


def _explain_wait(appointment: Appointment) -> Appointment:
    waiting_for = "a meeting" if appointment.status == "requested" else "the confirmation email"
    why = f"waiting for {waiting_for} since {appointment.updated_at:%Y-%m-%d %H:%M %Z}"
    if appointment.why:
        why += f" ({appointment.why})"
    return replace(appointment, why=why)
