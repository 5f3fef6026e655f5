"""Text messages: which are owed (`plan`, from the appointment's state and the email log), when
each may go (quiet hours), sending them (`send_due`, from the poller), and what the provider
says afterwards (`visio_notifications.sms_receipts`).

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
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from visio_runtime import french_dates as dates
from visio_runtime.errors import Transient
from visio_shared import AppointmentRequested, SmsFailed
from visio_shared.links import short_code, short_url

from visio_notifications import quiet_hours, sms_encoding, sms_wording, store
from visio_notifications.decide import LINK_KINDS, State, number_sha256
from visio_notifications.deps import NotificationsDeps
from visio_notifications.settings import NotificationsSettings
from visio_notifications.sms_metrics import SMS_KINDS, SmsMetrics
from visio_notifications.sms_provider import (
    Accepted,
    SmsAmbiguous,
    SmsMessage,
    SmsProvider,
    SmsRejected,
)

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


async def plan(
    conn: asyncpg.Connection, state: State, settings: NotificationsSettings, now: datetime
) -> None:
    """Bring the appointment's texts in line with its state (the caller holds its lock)."""
    appointment = state.appointment
    if appointment is None or settings.sms_provider == "none":
        return
    appointment_id = appointment.appointment_id
    mobile, opted = appointment.user.mobile, appointment.user.sms_opt_in
    if state.texts_pending:  # else nothing waits to be called off: most emails
        await _call_off_stale(conn, appointment, cancelled=state.cancellation is not None)
    if mobile is None:
        return
    for told in state.history:
        if told.kind in FOLLOWS and told.status == "sent" and opted:
            await _plan_one(conn, state, settings, now, told.kind, told.revision)
        elif told.kind in LINK_KINDS and told.status == "failed":
            await _plan_one(conn, state, settings, now, "confirmation", told.revision, True)
    confirmed = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM sms_messages WHERE appointment_id = $1 "
        "AND kind = 'confirmation' AND status IN ('pending', 'sent', 'unknown'))",
        appointment_id,
    )
    if confirmed and state.cancellation is None:
        for offset in settings.reminder_offsets_minutes:
            due = appointment.start - timedelta(minutes=offset)
            if due > now:
                await _plan_one(
                    conn, state, settings, now, "reminder", appointment.revision, offset=offset
                )


async def _call_off_stale(
    conn: asyncpg.Connection, appointment: AppointmentRequested, *, cancelled: bool
) -> None:
    """Pending texts the appointment no longer calls for: all but the cancellation's once it is
    cancelled, else those about another time than its current one."""
    if cancelled:
        await conn.execute(
            "UPDATE sms_messages SET status = 'cancelled' WHERE appointment_id = $1 "
            "AND status = 'pending' AND kind <> 'cancellation'",
            appointment.appointment_id,
        )
    else:
        await conn.execute(
            "UPDATE sms_messages SET status = 'cancelled' WHERE appointment_id = $1 "
            "AND status = 'pending' AND start_at <> $2",
            appointment.appointment_id,
            appointment.start,
        )


async def _plan_one(
    conn: asyncpg.Connection,
    state: State,
    settings: NotificationsSettings,
    now: datetime,
    kind: str,
    revision: int,
    fallback: bool = False,
    offset: int | None = None,
) -> None:
    appointment = state.appointment
    assert appointment is not None
    start = appointment.start
    if kind == "reminder":
        assert offset is not None
        reminded = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM sms_messages WHERE appointment_id = $1 "
            "AND kind = 'reminder' AND reminder_offset_minutes = $2 AND start_at = $3 "
            "AND status <> 'cancelled')",
            appointment.appointment_id,
            offset,
            start,
        )
        if reminded:
            return
        planned = start - timedelta(minutes=offset)
    else:
        planned = now
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
    await conn.execute(
        """
        INSERT INTO sms_messages (appointment_id, kind, revision, reminder_offset_minutes,
                                  start_at, client_ref, promise, fallback, status, due_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9)
        ON CONFLICT DO NOTHING
        """,
        appointment.appointment_id,
        kind,
        revision,
        offset,
        start,
        client_ref(appointment.appointment_id, kind, revision, offset),
        PROMISES[kind],
        fallback,
        due,
    )


# --- Sending -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Due:
    id: int
    appointment_id: uuid.UUID
    kind: str
    revision: int
    reminder_offset_minutes: int | None
    start_at: datetime
    client_ref: str
    promise: str
    attempts: int
    in_doubt: bool


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


async def send_due(deps: NotificationsDeps, sms: SmsProvider, counters: SmsMetrics) -> int:
    """Send each text that is due; returns how many were handled."""
    now = deps.clock()
    passed: list[int] = []
    handled = 0
    async with deps.pool.acquire() as conn:
        while True:
            async with conn.transaction():
                row = await conn.fetchrow(
                    """
                    SELECT id, appointment_id, kind, revision, reminder_offset_minutes, start_at,
                           client_ref, promise, attempts, in_doubt
                    FROM sms_messages
                    WHERE status = 'pending' AND due_at <= $1
                      AND (retry_at IS NULL OR retry_at <= $1) AND NOT (id = ANY($2::bigint[]))
                    ORDER BY due_at LIMIT 1 FOR UPDATE SKIP LOCKED
                    """,
                    now,
                    passed,
                )
                if row is None:
                    return handled
                due = Due(**dict(row))
                passed.append(due.id)
                if not await store.LOCKS.try_hold(conn, due.appointment_id):
                    continue
                await _send_one(deps, conn, sms, counters, due, now)
            handled += 1


async def _finish(conn: asyncpg.Connection, due: Due, status: str, **columns: Any) -> None:
    sets = ", ".join(f"{name} = ${index}" for index, name in enumerate(columns, start=3))
    await conn.execute(
        f"UPDATE sms_messages SET status = $2{', ' + sets if sets else ''} WHERE id = $1",
        due.id,
        status,
        *columns.values(),
    )


async def _send_one(
    deps: NotificationsDeps,
    conn: asyncpg.Connection,
    sms: SmsProvider,
    counters: SmsMetrics,
    due: Due,
    now: datetime,
) -> None:
    state = await store.load_state(conn, due.appointment_id)
    appointment = state.appointment
    if appointment is None or appointment.user.mobile is None:
        return await _finish(conn, due, "cancelled")
    if due.kind != "cancellation" and state.cancellation is not None:
        return await _finish(conn, due, "cancelled")
    if due.kind != "cancellation" and now >= appointment.start:
        return await _finish(conn, due, "expired")
    text = text_of(due.kind, state, deps.settings, now, due.reminder_offset_minutes)
    counted = sms_encoding.count(text)
    mobile = appointment.user.mobile
    message = SmsMessage(
        recipient=mobile,
        text=text,
        client_ref=due.client_ref,
        unicode=counted.encoding == "UCS-2",
        receipt_url=receipt_url(deps.settings),
    )
    ambiguous = 0
    if due.in_doubt:
        try:
            found = await sms.find(due.client_ref)
        except Transient as exc:
            found = None
            if due.promise == AT_MOST_ONCE:
                counters.ambiguous.labels("given_up").inc()
                log.warning("sms %s of %s: answer lost, not resent (%s)", due.kind, due.id, exc)
                return await _finish(conn, due, "unknown", ambiguous=1, last_error=str(exc))
            counters.ambiguous.labels("resent").inc()
            ambiguous = 1
        if found is not None:
            counters.sends.labels(due.kind, "found").inc()
            return await _sent(conn, due, found, counted, mobile, now, counters, count=False)
    try:
        accepted = await sms.send(message)
    except SmsRejected as exc:
        counters.sends.labels(due.kind, "rejected").inc()
        return await _failed(conn, due, appointment, exc.reason, exc.detail, counters, mobile)
    except SmsAmbiguous as exc:
        counters.sends.labels(due.kind, "ambiguous").inc()
        return await _postpone(deps, conn, due, now, str(exc), in_doubt=True, ambiguous=ambiguous)
    except Transient as exc:
        counters.sends.labels(due.kind, "deferred").inc()
        return await _postpone(
            deps, conn, due, now, str(exc), in_doubt=due.in_doubt, ambiguous=ambiguous
        )
    counters.sends.labels(due.kind, "sent").inc()
    await _sent(conn, due, accepted, counted, mobile, now, counters, ambiguous=ambiguous)


async def _sent(
    conn: asyncpg.Connection,
    due: Due,
    accepted: Accepted,
    counted: sms_encoding.SmsCount,
    mobile: str,
    now: datetime,
    counters: SmsMetrics,
    *,
    count: bool = True,
    ambiguous: int = 0,
) -> None:
    if count:
        counters.segments.labels(counted.encoding).inc(counted.segments)
    await conn.execute(
        """
        UPDATE sms_messages SET status = 'sent', provider_id = $2, encoding = $3, segments = $4,
               recipient_sha256 = $5, sent_at = $6, in_doubt = false,
               ambiguous = ambiguous + $7, attempts = attempts + 1
        WHERE id = $1
        """,
        due.id,
        accepted.provider_id,
        counted.encoding,
        counted.segments,
        number_sha256(mobile),
        now,
        ambiguous,
    )
    log.info(
        "sms %s of %s sent (%s, %d segment(s))",
        due.kind,
        due.appointment_id,
        counted.encoding,
        counted.segments,
    )


async def _postpone(
    deps: NotificationsDeps,
    conn: asyncpg.Connection,
    due: Due,
    now: datetime,
    error: str,
    *,
    in_doubt: bool,
    ambiguous: int,
) -> None:
    settings = deps.settings
    delay = min(settings.sms_retry_initial_s * 2**due.attempts, settings.sms_retry_max_s)
    await conn.execute(
        """
        UPDATE sms_messages SET attempts = attempts + 1, retry_at = $2, last_error = $3,
               in_doubt = $4, ambiguous = ambiguous + $5
        WHERE id = $1
        """,
        due.id,
        now + timedelta(seconds=delay),
        error[:500],
        in_doubt,
        ambiguous,
    )
    log.warning("sms %s of %s postponed: %s", due.kind, due.appointment_id, error)


async def _failed(
    conn: asyncpg.Connection,
    due: Due,
    appointment: Any,
    reason: str,
    detail: str,
    counters: SmsMetrics,
    mobile: str,
) -> None:
    counters.failures.labels(reason).inc()
    event = SmsFailed(
        appointment_id=due.appointment_id,
        revision=due.revision,
        correlation_id=appointment.correlation_id,
        kind=due.kind,
        reason=reason,
        detail=detail[:500],
        reminder_offset_minutes=due.reminder_offset_minutes,
    )
    await conn.execute(
        "UPDATE sms_messages SET status = 'failed', last_error = $2, failure_event = $3::jsonb, "
        "recipient_sha256 = $4 WHERE id = $1",
        due.id,
        detail[:500],
        event.model_dump_json(),
        number_sha256(mobile),
    )
    log.warning("sms %s of %s failed for good: %s", due.kind, due.appointment_id, reason)


def receipt_url(settings: NotificationsSettings) -> str | None:
    if settings.sms_receipt_url is None:
        return None
    token = settings.sms_receipt_token.get_secret_value()
    return f"{settings.sms_receipt_url.rstrip('/')}/{token}"
