"""`ops appointments --stuck / --failed`: read from booking's schema with an owner connection.
Stuck: a person still waiting for an email — their confirmation, an update, a cancellation,
the link asked for again — longer than VISIO_EMAIL_LATE_AFTER_MINUTES, with what it waits for
since when and where it stands in each service (`whereabouts`). Failed: a meeting or an email
failed for good, with why (booking's status reason, else its last history entry). Never the
person's name or address: this output ends up in tickets and chat rooms."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from visio_deploy.ops.dlq import Letter
from visio_deploy.ops.whereabouts import whereabouts

FAILED = ("meeting_failed", "notification_failed")

# Booking's history steps that owe the person an email, and the steps that say one went (or
# failed for good). An email of the same revision or a later one tells the appointment as it
# stands; a link asked for again is answered by the next `link_resent` after it. A resend
# asked for on a cancelled appointment is answered by no email, on purpose.
_OWED_BY = {
    "requested": "confirmation",
    "rescheduled": "rescheduled",
    "contact_corrected": "contact_corrected",
    "advisor_reassigned": "advisor_changed",
    "cancelled": "cancellation",
    "link_requested": "link_resent",
}
_WAITING = """
SELECT DISTINCT ON (h.appointment_id) h.appointment_id, h.status AS step, h.at AS owed_since
FROM booking.appointment_history h JOIN booking.appointments a USING (appointment_id)
WHERE h.status = ANY($1::text[])
  AND NOT (h.status = 'link_requested' AND h.detail = 'resend' AND a.status = 'cancelled')
  AND NOT EXISTS (
        SELECT 1 FROM booking.appointment_history t
        WHERE t.appointment_id = h.appointment_id
          AND t.status IN ('confirmed', 'notification_sent', 'notification_failed')
          AND CASE WHEN h.status = 'link_requested'
                   THEN t.id > h.id AND coalesce(t.detail, '') LIKE 'link\\_resent%'
                   ELSE t.revision >= h.revision
                        AND coalesce(t.detail, '') NOT LIKE 'link\\_resent%' END)
ORDER BY h.appointment_id, h.id
"""
_QUERY = f"""
SELECT a.appointment_id::text, a.caf_code, a.advisor_name AS advisor, a.start_at, a.timezone,
       a.status, a.created_at AS booked_at, a.updated_at, w.step, w.owed_since
FROM ({_WAITING}) w JOIN booking.appointments a USING (appointment_id)
WHERE w.owed_since < now() - $2::float8 * interval '1 minute'
ORDER BY w.owed_since
"""
_FAILED = """
SELECT a.appointment_id::text, a.caf_code, a.advisor_name AS advisor, a.start_at, a.timezone,
       a.status, a.created_at AS booked_at, a.updated_at,
       coalesce(a.status_reason, last.detail, '') AS why
FROM booking.appointments a
LEFT JOIN LATERAL (
    SELECT detail FROM booking.appointment_history h
    WHERE h.appointment_id = a.appointment_id AND h.detail IS NOT NULL
    ORDER BY h.id DESC LIMIT 1
) last ON true
WHERE a.status = ANY($1::text[])
ORDER BY a.created_at
"""


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


async def stuck(
    owner_dsn: str, after_minutes: float, letters: list[Letter] | None = None
) -> list[Appointment]:
    """People waiting for an email longer than `after_minutes`, longest wait first; `letters`,
    the dead letters, to say which carry their appointment."""
    conn = await asyncpg.connect(owner_dsn)
    try:
        rows = await conn.fetch(_QUERY, list(_OWED_BY), after_minutes)
    finally:
        await conn.close()
    where = await whereabouts(owner_dsn, [row["appointment_id"] for row in rows], letters or [])
    found = []
    for row in rows:
        fields = dict(row)
        step, since = fields.pop("step"), fields.pop("owed_since")
        waited = f"waiting for the {_OWED_BY[step]} email since {since:%Y-%m-%d %H:%M %Z}"
        said = "; ".join(where[row["appointment_id"]])
        found.append(Appointment(**fields, why=f"{waited} — {said}"))
    return found


async def failed(owner_dsn: str) -> list[Appointment]:
    conn = await asyncpg.connect(owner_dsn)
    try:
        rows = await conn.fetch(_FAILED, list(FAILED))
    finally:
        await conn.close()
    return [Appointment(**dict(row)) for row in rows]
