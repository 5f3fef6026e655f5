"""The alerts' tables (schema `alerts`): a copy of each appointment as far as alerts need it,
the emails each person is owed and those they were told, and one row per (appointment, cause,
occasion) — inserted once, sent once."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg
from visio_runtime.db import SchemaSpec
from visio_shared import (
    AdvisorReassigned,
    AppointmentCancelled,
    AppointmentEvent,
    AppointmentLinkRequested,
    AppointmentRequested,
    AppointmentRescheduled,
    ContactCorrected,
    NotificationFailed,
    NotificationSent,
)

SCHEMA = SchemaSpec(schema="alerts", sql_dir=Path(__file__).parent / "migrations")


async def keep_appointments(
    conn: asyncpg.Connection, events: Sequence[AppointmentRequested]
) -> None:
    """The copies of these appointments, in one statement; a repeat changes nothing."""
    if not events:
        return
    await conn.execute(
        """
        INSERT INTO appointments (appointment_id, revision, caf_code, advisor_id, advisor_name,
                                  start_at, timezone, requested_at)
        SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[],
                             $6::timestamptz[], $7::text[], $8::timestamptz[])
        ON CONFLICT (appointment_id) DO NOTHING
        """,
        [event.appointment_id for event in events],
        [event.revision for event in events],
        [event.caf_code for event in events],
        [event.advisor.id for event in events],
        [event.advisor.display_name for event in events],
        [event.start for event in events],
        [event.timezone for event in events],
        [event.occurred_at for event in events],
    )


async def follow_change(
    conn: asyncpg.Connection, event: AppointmentRescheduled | AdvisorReassigned
) -> None:
    """A newer revision's time or advisor; an older one (redelivered late) changes nothing."""
    if isinstance(event, AppointmentRescheduled):
        sql = "start_at = $3, timezone = $4"
        values: tuple[object, ...] = (event.start, event.timezone)
    else:
        sql = "advisor_id = $3, advisor_name = $4"
        values = (event.advisor.id, event.advisor.display_name)
    await conn.execute(
        f"UPDATE appointments SET revision = $2, {sql}, updated_at = now() "
        "WHERE appointment_id = $1 AND revision < $2",
        event.appointment_id,
        event.revision,
        *values,
    )


async def mark(conn: asyncpg.Connection, appointment_ids: Sequence[uuid.UUID], column: str) -> None:
    """The first time these appointments were confirmed, or cancelled (one statement)."""
    assert column in ("confirmed_at", "cancelled_at")
    if not appointment_ids:
        return
    await conn.execute(
        f"UPDATE appointments SET {column} = coalesce({column}, now()), updated_at = now() "
        "WHERE appointment_id = ANY($1::uuid[])",
        list(appointment_ids),
    )


async def record_alert(
    conn: asyncpg.Connection,
    appointment_id: uuid.UUID,
    cause: str,
    reason: str,
    detail: str,
    source_event_id: uuid.UUID | None,
) -> None:
    await conn.execute(
        """
        INSERT INTO alerts (appointment_id, cause, reason, detail, source_event_id)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (appointment_id, cause, occasion) DO NOTHING
        """,
        appointment_id,
        cause,
        reason,
        detail,
        source_event_id,
    )


# The email each event calls for, as notifications names its kinds.
OWED_EMAIL: dict[type[AppointmentEvent], str] = {
    AppointmentRequested: "confirmation",
    AppointmentRescheduled: "rescheduled",
    ContactCorrected: "contact_corrected",
    AdvisorReassigned: "advisor_changed",
    AppointmentCancelled: "cancellation",
    AppointmentLinkRequested: "link_resent",
}


async def owe_emails(conn: asyncpg.Connection, events: Sequence[AppointmentEvent]) -> None:
    """The person is owed an email since each of these events happened (booking's clock, not
    ours: a backlog here does not hide a wait); one statement."""
    if not events:
        return
    requests = [event if isinstance(event, AppointmentLinkRequested) else None for event in events]
    await conn.execute(
        """
        INSERT INTO emails_owed (appointment_id, occasion, email, revision, request_id, reason,
                                 owed_since)
        SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::uuid[],
                             $6::text[], $7::timestamptz[])
        ON CONFLICT (appointment_id, occasion) DO NOTHING
        """,
        [event.appointment_id for event in events],
        [
            f"request-{event.event_id}" if request else f"r{event.revision}"
            for event, request in zip(events, requests, strict=True)
        ],
        [OWED_EMAIL[type(event)] for event in events],
        [event.revision for event in events],
        [request.event_id if request else None for request in requests],
        [request.reason if request else None for request in requests],
        [event.occurred_at for event in events],
    )


async def tell_emails(
    conn: asyncpg.Connection, events: Sequence[NotificationSent | NotificationFailed]
) -> None:
    """Emails sent, or given up on (which the failure alert reports): either way, no longer
    waited for. Kept even before the appointment is known here: the topics keep no order."""
    if not events:
        return
    await conn.execute(
        """
        INSERT INTO emails_told (event_id, appointment_id, revision, kind, causation_id, told_at)
        SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int[], $4::text[], $5::uuid[],
                             $6::timestamptz[])
        ON CONFLICT (event_id) DO NOTHING
        """,
        [event.event_id for event in events],
        [event.appointment_id for event in events],
        [event.revision for event in events],
        [event.kind for event in events],
        [event.causation_id for event in events],
        [event.occurred_at for event in events],
    )


async def mark_told(conn: asyncpg.Connection, appointment_ids: Sequence[uuid.UUID]) -> None:
    """Of these appointments' owed emails, those now told: an email of the same revision or a
    later one tells the appointment as it stands; the one whose cause is the request answers
    a request for the link again. One statement."""
    if not appointment_ids:
        return
    await conn.execute(
        """
        UPDATE emails_owed o SET told_at = t.told_at
        FROM emails_told t
        WHERE o.appointment_id = ANY($1::uuid[]) AND o.told_at IS NULL
          AND t.appointment_id = o.appointment_id
          AND CASE WHEN o.request_id IS NULL
                   THEN t.kind <> 'link_resent' AND t.revision >= o.revision
                   ELSE t.causation_id = o.request_id END
        """,
        list(appointment_ids),
    )


# Owed emails no email has told (a request for the email again on a cancelled appointment
# gets none, on purpose).
_WAITING = """
SELECT o.appointment_id, o.occasion, o.email, o.revision, o.owed_since
FROM emails_owed o LEFT JOIN appointments a USING (appointment_id)
WHERE o.told_at IS NULL AND NOT (o.reason = 'resend' AND a.cancelled_at IS NOT NULL)
"""


async def waiting_counts(conn: asyncpg.Connection, longer_than_minutes: float) -> tuple[int, int]:
    """How many people wait for an email, and how many of them longer than this (counted in
    the database: a backlog can owe tens of thousands)."""
    row = await conn.fetchrow(
        f"""
        SELECT count(DISTINCT w.appointment_id) AS waiting,
               count(DISTINCT w.appointment_id) FILTER (
                   WHERE w.owed_since <= now() - $1::float8 * interval '1 minute') AS late
        FROM ({_WAITING}) w
        """,
        longer_than_minutes,
    )
    assert row is not None
    return row["waiting"], row["late"]


async def record_late(conn: asyncpg.Connection, after_minutes: float) -> int:
    """An 'email_late' alert for each email owed longer than the threshold, once per
    occasion — unless the appointment's meeting or email already failed for good (that alert
    said it better). Returns how many were recorded."""
    status: str = await conn.execute(
        f"""
        INSERT INTO alerts (appointment_id, cause, occasion, reason, detail)
        SELECT w.appointment_id, 'email_late', w.occasion, w.email,
               'owed since ' || to_char(w.owed_since AT TIME ZONE 'UTC',
                                        'YYYY-MM-DD"T"HH24:MI:SS"Z"')
        FROM ({_WAITING}) w
        WHERE w.owed_since <= now() - $1::float8 * interval '1 minute'
          AND NOT EXISTS (SELECT 1 FROM alerts f WHERE f.appointment_id = w.appointment_id
                          AND f.cause IN ('meeting_failed', 'notification_failed'))
        ON CONFLICT (appointment_id, cause, occasion) DO NOTHING
        """,
        after_minutes,
    )
    return int(status.split()[-1])


@dataclass(frozen=True)
class PendingAlert:
    appointment_id: uuid.UUID
    cause: str
    occasion: str
    reason: str
    detail: str
    # From the appointment's copy; None when the copy never came (sent anyway, after a while).
    caf_code: str | None
    advisor_id: str | None
    advisor_name: str | None
    start_at: datetime | None
    timezone: str | None


async def lock_next(
    conn: asyncpg.Connection,
    appointment_ids: list[uuid.UUID] | None,
    orphan_after_minutes: float,
) -> PendingAlert | None:
    """The oldest unsent alert whose appointment is known — or unknown for too long — locked
    until the caller's transaction ends, so two senders never send the same one."""
    row = await conn.fetchrow(
        """
        SELECT al.appointment_id, al.cause, al.occasion, al.reason, al.detail, ap.caf_code,
               ap.advisor_id,
               ap.advisor_name, ap.start_at, ap.timezone
        FROM alerts al LEFT JOIN appointments ap USING (appointment_id)
        WHERE al.sent_at IS NULL
          AND ($1::uuid[] IS NULL OR al.appointment_id = ANY($1::uuid[]))
          AND (ap.appointment_id IS NOT NULL
               OR al.recorded_at < now() - $2::float8 * interval '1 minute')
        ORDER BY al.recorded_at
        LIMIT 1
        FOR UPDATE OF al SKIP LOCKED
        """,
        appointment_ids,
        orphan_after_minutes,
    )
    return PendingAlert(**dict(row)) if row else None


async def mark_sent(conn: asyncpg.Connection, alert: PendingAlert, recipient: str) -> None:
    await conn.execute(
        "UPDATE alerts SET sent_at = now(), recipient = $3, start_at = $4 "
        "WHERE appointment_id = $1 AND cause = $2 AND occasion = $5",
        alert.appointment_id,
        alert.cause,
        recipient,
        alert.start_at,
        alert.occasion,
    )
