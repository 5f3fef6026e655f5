"""Where an appointment's story stands, service by service, when a person is still waiting:
what booking has not published, what meetings made, whether notifications holds the
appointment and its meeting, waits to retry its email (until when, after which answer of the
relay) or sent it, and which dead letters carry its id — or that no service holds it at all.

Read with an owner connection from every service's schema; for `ops appointments --stuck` and
for the chaos proof, which names where each appointment it saw unsettled stands. Never a name
or an address: ids, statuses, times and the relay's redacted answer.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

import asyncpg

from visio_deploy.ops.dlq import Letter

# Nothing in any table or dead-letter topic holds work for it. Only an event still unread (a
# consumer group that lags, `ops lag`) or held in a consumer's memory between two of its
# bounded retries is not seen here: past those, it is lost.
NOWHERE = (
    "nowhere: no table or dead letter holds work for it (unless a consumer has not read it "
    "yet or retries it in memory: see `ops lag`)"
)

_BOOKING = """
SELECT a.appointment_id, a.status, a.revision,
       (SELECT count(*) FROM booking.outbox o
        WHERE o.key = a.appointment_id::text AND o.published_at IS NULL) AS unpublished
FROM booking.appointments a WHERE a.appointment_id = ANY($1::uuid[])
"""
_MEETINGS = """
SELECT appointment_id, revision, status, failure_reason FROM meetings.meetings
WHERE appointment_id = ANY($1::uuid[])
"""
_NOTIFICATIONS = """
SELECT a.appointment_id, a.revision, a.settle_after, a.settle_attempts, a.settle_error,
       m.revision AS meeting_revision
FROM notifications.appointments a LEFT JOIN notifications.meetings m USING (appointment_id)
WHERE a.appointment_id = ANY($1::uuid[])
"""
_MEETING_ONLY = """
SELECT appointment_id FROM notifications.meetings WHERE appointment_id = ANY($1::uuid[])
"""
_DISPATCHES = """
SELECT DISTINCT ON (appointment_id) appointment_id, kind, revision, status, sent_at,
       published_at
FROM notifications.dispatches WHERE appointment_id = ANY($1::uuid[])
ORDER BY appointment_id, id DESC
"""


async def whereabouts(
    owner_dsn: str, appointment_ids: Iterable[str], letters: Iterable[Letter] = ()
) -> dict[str, list[str]]:
    """For each appointment, what each service says of it, most telling first; `[NOWHERE]`
    when booking knows it but nothing downstream holds work for it."""
    ids = sorted({str(a) for a in appointment_ids})
    if not ids:
        return {}
    wanted = [uuid.UUID(a) for a in ids]
    conn = await asyncpg.connect(owner_dsn)
    try:
        booking = _by_id(await conn.fetch(_BOOKING, wanted))
        meetings = _by_id(await conn.fetch(_MEETINGS, wanted))
        notified = _by_id(await conn.fetch(_NOTIFICATIONS, wanted))
        meeting_only = set(_by_id(await conn.fetch(_MEETING_ONLY, wanted)))
        dispatched = _by_id(await conn.fetch(_DISPATCHES, wanted))
        now: datetime = await conn.fetchval("SELECT now()")
    finally:
        await conn.close()
    dead = _dead_letters(letters)
    found: dict[str, list[str]] = {}
    for appointment in ids:
        said = [f"dead-lettered: {text}" for text in dead.get(appointment, [])]
        said += _booking(booking.get(appointment))
        said += _meetings(meetings.get(appointment), booking.get(appointment))
        said += _notifications(
            notified.get(appointment), appointment in meeting_only, dispatched.get(appointment), now
        )
        said += _in_flight(dispatched.get(appointment), booking.get(appointment))
        found[appointment] = said if any(_holds_work(s) for s in said) else [*said, NOWHERE]
    return found


def _by_id(rows: list[asyncpg.Record]) -> dict[str, asyncpg.Record]:
    return {str(row["appointment_id"]): row for row in rows}


def _dead_letters(letters: Iterable[Letter]) -> dict[str, list[str]]:
    """Letters by the appointment id they are keyed by (every event is keyed by it)."""
    found: dict[str, list[str]] = {}
    for letter in letters:
        key = letter.record.key.decode(errors="replace") if letter.record.key else ""
        found.setdefault(key, []).append(
            f"{letter.id} ({letter.event_type} from {letter.source_topic}: {letter.reason[:160]})"
        )
    return found


def _booking(row: asyncpg.Record | None) -> list[str]:
    if row is None:
        return ["booking: no such appointment"]
    said = [f"booking: {row['status']} at revision {row['revision']}"]
    if row["unpublished"]:
        said.append(f"booking: {row['unpublished']} event(s) not published yet (outbox)")
    return said


def _meetings(row: asyncpg.Record | None, booked: asyncpg.Record | None) -> list[str]:
    if row is None:
        waiting = booked is not None and booked["status"] == "requested"
        return ["meetings: waiting for a meeting, none made yet" if waiting else "meetings: none"]
    if row["status"] == "failed":
        return [f"meetings: failed at revision {row['revision']} ({row['failure_reason']})"]
    return [f"meetings: meeting ready at revision {row['revision']}"]


def _notifications(
    row: asyncpg.Record | None,
    meeting_only: bool,
    dispatch: asyncpg.Record | None,
    now: datetime,
) -> list[str]:
    said = []
    if row is None:
        said.append(
            "notifications: has its meeting but not the appointment"
            if meeting_only
            else "notifications: has not heard of it"
        )
    elif row["meeting_revision"] is None:
        said.append(f"notifications: has the appointment (r{row['revision']}), no meeting yet")
    if row is not None and row["settle_after"] is not None:
        until = row["settle_after"]
        if row["settle_attempts"]:
            said.append(
                f"notifications: waiting for a retry until {until:%Y-%m-%d %H:%M:%S %Z} "
                f"({_relative(until, now)}), after {row['settle_attempts']} failed "
                f"attempt(s); last: {row['settle_error'] or '?'}"
            )
        elif until > now:
            # The event's handler is settling it; the poller takes over after its handover
            # (NOTIFICATIONS_SETTLE_HANDOVER_S) if the handler stopped half-way.
            said.append(
                "notifications: email due, its handler on it (the poller takes over "
                f"{_relative(until, now)})"
            )
        else:
            said.append(f"notifications: email due since {until:%Y-%m-%d %H:%M:%S %Z}")
    if dispatch is not None:
        outcome = "sent" if dispatch["status"] == "sent" else "failed for good"
        said.append(
            f"notifications: last email {dispatch['kind']} r{dispatch['revision']} {outcome}"
            + (f" at {dispatch['sent_at']:%H:%M:%S}" if dispatch["sent_at"] else "")
            + ("" if dispatch["published_at"] else "; its outcome not published yet")
        )
    return said


def _in_flight(dispatch: asyncpg.Record | None, booked: asyncpg.Record | None) -> list[str]:
    """An email sent and its outcome on Kafka, but booking's status not moved yet: booking's
    consumer of notifications.v1 has it still to come (it lags, or holds it for a retry)."""
    if dispatch is None or booked is None or dispatch["published_at"] is None:
        return []
    if dispatch["status"] != "sent" or booked["status"] not in ("requested", "meeting_ready"):
        return []
    return [
        f"booking: has not applied the outcome published at {dispatch['published_at']:%H:%M:%S}"
        " (on its way: booking's consumer of notifications.v1)"
    ]


def _relative(moment: datetime, now: datetime) -> str:
    seconds = (moment - now).total_seconds()
    return f"in {seconds:.0f} s" if seconds >= 0 else f"due {-seconds:.0f} s ago"


def _holds_work(said: str) -> bool:
    """Whether this line shows a service holding work for the appointment (so it is
    somewhere): a dead letter, an unpublished event, a retry or a due email."""
    return said.startswith("dead-lettered") or any(
        marker in said
        for marker in ("not published yet", "waiting for a retry", "email due", "on its way")
    )
