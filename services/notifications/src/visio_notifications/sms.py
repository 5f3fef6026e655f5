"""Text messages: which are owed (`plan`, from the appointment's state and the email log), when
each may go (quiet hours), what they say (`text_of`); sending them is
`visio_notifications.sms_sending` (from the poller), and what the provider says afterwards
`visio_notifications.sms_receipts`.

Planned, under the appointment's lock and in the transaction that logs the email:

- to a person who chose texts (`sms_opt_in` and a mobile): the confirmation, the change and
  cancellation notices, each once the matching email is logged as sent, and the reminders
  (`reminder_offsets_minutes` before the start) once the confirmation text is planned;
- to a person whose email failed (refused, or bounced later) and who gave a mobile: the
  confirmation as a text, the way in when email fails (`fallback`), opted in or not.

Each kind has a promise for when the provider's answer is lost (`PROMISES`): confirmations and
change notices are sent at least once (a person without them is lost), reminders at most once
(the email reminded them too, and twice is noise). First, though, the provider is asked whether
it has the text, by the client reference we gave it: only when it cannot tell does the promise
decide, and that send is counted apart (`ambiguous`, `sms_ambiguous_total`).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from visio_runtime import french_dates as dates
from visio_shared.links import short_code, short_url

from visio_notifications import quiet_hours, sms_wording
from visio_notifications.decide import LINK_KINDS, State
from visio_notifications.settings import NotificationsSettings
from visio_notifications.sms_metrics import SMS_KINDS

log = logging.getLogger(__name__)

AT_LEAST_ONCE, AT_MOST_ONCE = "at_least_once", "at_most_once"
PROMISES: dict[str, str] = {
    "confirmation": AT_LEAST_ONCE,
    "rescheduled": AT_LEAST_ONCE,
    "advisor_changed": AT_LEAST_ONCE,
    "cancellation": AT_LEAST_ONCE,
    "reminder": AT_MOST_ONCE,
}
assert set(PROMISES) == set(SMS_KINDS)
# The emails a text follows, once logged as sent.
FOLLOWS = frozenset({"confirmation", "rescheduled", "advisor_changed", "cancellation"})


def client_ref(appointment_id: uuid.UUID, kind: str, revision: int, offset: int | None) -> str:
    """Ours, deterministic per text, given to the provider to find the text again."""
    key = f"{appointment_id}:{kind}:{revision}:{offset if offset is not None else '-'}"
    return "rdv-" + hashlib.sha256(key.encode()).hexdigest()[:24]


# --- Planning ------------------------------------------------------------------------------


# One text to plan: appointment, kind, revision, reminder offset, start, client reference,
# promise, fallback, due.
Row = tuple[uuid.UUID, str, int, int | None, datetime, str, str, bool, datetime]


@dataclass(frozen=True)
class Planned:
    """The texts one appointment's state calls for (`wanted`), to write with others' (`plan`)."""

    appointment_id: uuid.UUID
    cancelled: bool  # its pending texts go, but a cancellation notice
    start: datetime  # else those of another time than this one go
    texts: tuple[Row, ...] = ()  # the notices owed, each once
    reminders: tuple[Row, ...] = ()  # owed once a confirmation text is planned, each once a start


def wanted(state: State, settings: NotificationsSettings, now: datetime) -> Planned | None:
    """The texts this state calls for; None without a provider or an appointment."""
    appointment = state.appointment
    if appointment is None or settings.sms_provider == "none":
        return None
    planned = Planned(appointment.appointment_id, state.cancellation is not None, appointment.start)
    if appointment.user.mobile is None:
        return planned
    opted = appointment.user.sms_opt_in
    texts: dict[tuple[str, int], Row] = {}  # the first of a key wins, as a row once inserted
    for told in state.history:
        if told.kind in FOLLOWS and told.status == "sent" and opted:
            row = _row(state, settings, now, told.kind, told.revision)
        elif told.kind in LINK_KINDS and told.status == "failed":
            row = _row(state, settings, now, "confirmation", told.revision, True)
        else:
            continue
        texts.setdefault((row[1], row[2]), row)
    reminders: list[Row] = []
    if state.cancellation is None:
        for offset in dict.fromkeys(settings.reminder_offsets_minutes):
            due = appointment.start - timedelta(minutes=offset)
            if due > now:
                row = _row(state, settings, now, "reminder", appointment.revision, offset=offset)
                reminders.append(row)
    return replace(planned, texts=tuple(texts.values()), reminders=tuple(reminders))


async def plan(
    conn: asyncpg.Connection, state: State, settings: NotificationsSettings, now: datetime
) -> None:
    """Bring the appointment's texts in line with its state (the caller holds its lock)."""
    planned = wanted(state, settings, now)
    if planned is not None:
        await plan_many(conn, [planned])


async def plan_many(conn: asyncpg.Connection, planned: Sequence[Planned]) -> None:
    """Write what `wanted` found for these appointments (the caller holds their locks), in two
    statements: the pending texts that no longer fit go, then the notices owed are planned,
    and the reminders of those with a confirmation text (planned now or before, and not given
    up) that have none at this start yet."""
    if not planned:
        return
    await conn.execute(
        """
        UPDATE sms_messages s SET status = 'cancelled'
        FROM unnest($1::uuid[], $2::bool[], $3::timestamptz[]) AS p(appointment_id, cancelled,
                                                                     start_at)
        WHERE s.appointment_id = p.appointment_id AND s.status = 'pending'
          AND CASE WHEN p.cancelled THEN s.kind <> 'cancellation' ELSE s.start_at <> p.start_at
              END
        """,
        [one.appointment_id for one in planned],
        [one.cancelled for one in planned],
        [one.start for one in planned],
    )
    texts = [row for one in planned for row in one.texts]
    reminders = [row for one in planned for row in one.reminders]
    if not texts and not reminders:
        return
    # The notices first, in a statement of their own within this one: the reminders' check
    # sees the confirmation it plans through its RETURNING.
    await conn.execute(
        """
        WITH texts AS (
            INSERT INTO sms_messages (appointment_id, kind, revision, reminder_offset_minutes,
                                      start_at, client_ref, promise, fallback, status, due_at)
            SELECT appointment_id, kind, revision, reminder_offset_minutes, start_at, client_ref,
                   promise, fallback, 'pending', due_at
            FROM unnest($1::uuid[], $2::text[], $3::int[], $4::int[], $5::timestamptz[],
                        $6::text[], $7::text[], $8::bool[], $9::timestamptz[])
                 AS t(appointment_id, kind, revision, reminder_offset_minutes, start_at,
                      client_ref, promise, fallback, due_at)
            ON CONFLICT DO NOTHING
            RETURNING appointment_id, kind
        )
        INSERT INTO sms_messages (appointment_id, kind, revision, reminder_offset_minutes,
                                  start_at, client_ref, promise, fallback, status, due_at)
        SELECT r.appointment_id, r.kind, r.revision, r.reminder_offset_minutes, r.start_at,
               r.client_ref, r.promise, r.fallback, 'pending', r.due_at
        FROM unnest($10::uuid[], $11::text[], $12::int[], $13::int[], $14::timestamptz[],
                    $15::text[], $16::text[], $17::bool[], $18::timestamptz[])
             AS r(appointment_id, kind, revision, reminder_offset_minutes, start_at,
                  client_ref, promise, fallback, due_at)
        WHERE (EXISTS (SELECT 1 FROM sms_messages c
                       WHERE c.appointment_id = r.appointment_id AND c.kind = 'confirmation'
                         AND c.status IN ('pending', 'sent', 'unknown'))
               OR EXISTS (SELECT 1 FROM texts
                          WHERE texts.appointment_id = r.appointment_id
                            AND texts.kind = 'confirmation'))
          AND NOT EXISTS (SELECT 1 FROM sms_messages s
                          WHERE s.appointment_id = r.appointment_id AND s.kind = 'reminder'
                            AND s.reminder_offset_minutes = r.reminder_offset_minutes
                            AND s.start_at = r.start_at AND s.status <> 'cancelled')
        ON CONFLICT DO NOTHING
        """,
        *_columns(texts),
        *_columns(reminders),
    )


def _columns(rows: list[Row]) -> list[list[Any]]:
    """The rows as the nine arrays `unnest` takes (nine empty ones for no rows)."""
    return [[row[index] for row in rows] for index in range(9)]


def _row(
    state: State,
    settings: NotificationsSettings,
    now: datetime,
    kind: str,
    revision: int,
    fallback: bool = False,
    offset: int | None = None,
) -> Row:
    appointment = state.appointment
    assert appointment is not None
    start = appointment.start
    planned = now if offset is None else start - timedelta(minutes=offset)
    zone = dates.appointment_zone(appointment.timezone, appointment.caf_code)
    due = quiet_hours.release_at(
        kind,
        planned,
        start,
        now,
        zone,
        start_hour=settings.sms_quiet_start_hour,
        end_hour=settings.sms_quiet_end_hour,
        urgent_minutes=settings.sms_urgent_reminder_minutes,
        urgent_change_minutes=settings.sms_urgent_change_minutes,
    )
    appointment_id = appointment.appointment_id
    reference = client_ref(appointment_id, kind, revision, offset)
    return (appointment_id, kind, revision, offset, start, reference, PROMISES[kind], fallback, due)


# --- Wording ---------------------------------------------------------------------------------


def text_of(
    due_kind: str,
    state: State,
    settings: NotificationsSettings,
    now: datetime,
    offset: int | None = None,
) -> str:
    appointment = state.appointment
    assert appointment is not None
    ring = settings.link_ring()
    url = (
        short_url(settings.booking_public_url, short_code(ring, appointment.appointment_id))
        if ring is not None
        else settings.booking_public_url
    )
    return sms_wording.render(due_kind, appointment, url, now, offset)
