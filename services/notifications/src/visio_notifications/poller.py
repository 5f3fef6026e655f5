"""The background loop of each replica: reminders that are due, and emails the relay could not
take earlier. Rows are claimed with FOR UPDATE SKIP LOCKED, so replicas share the work without
sending anything twice, and nothing is lost on a restart (an unsent row stays due).

Time comes from `deps.clock`, never from the database, so tests move a clock and call
`poll_once` to fire reminders exactly when they mean to.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

import asyncpg
from visio_runtime.errors import Transient

from visio_notifications import bounces, dispatches, outbox, reminders, sms, store
from visio_notifications.decide import Owed
from visio_notifications.delivery import Delivery, retry_delay
from visio_notifications.deps import NotificationsDeps
from visio_notifications.handlers import publish_outcomes, settle

log = logging.getLogger(__name__)


async def poll_once(deps: NotificationsDeps) -> dict[str, int]:
    """One round: retried emails, due reminders, any outcome Kafka does not have yet, and the
    personal data of appointments past their retention."""
    return {
        "settled": await retry_unsettled(deps),
        "reminders": await fire_due_reminders(deps),
        "sms": await send_due_sms(deps),
        "published": await publish_outcomes(deps)
        + await outbox.publish_pending(deps, "sms_messages.failure_event")
        + await outbox.publish_pending(deps, "bounces.event"),
        "forgotten": await forget_expired(deps),
    }


async def send_due_sms(deps: NotificationsDeps) -> int:
    if deps.sms is None or deps.sms_metrics is None:
        return 0
    return await sms.send_due(deps, deps.sms, deps.sms_metrics)


async def forget_expired(deps: NotificationsDeps) -> int:
    before = deps.clock() - timedelta(days=deps.settings.retention_days)
    async with deps.pool.acquire() as conn, conn.transaction():
        await bounces.forget_before(conn, before)
        return await store.forget_before(conn, before)


async def retry_unsettled(deps: NotificationsDeps) -> int:
    """Settle each appointment whose email is due for another try; returns how many."""
    now = deps.clock()
    passed: list[uuid.UUID] = []  # done or busy this round: next round's
    async with deps.pool.acquire() as conn:
        while True:
            recorded: list[str] = []
            async with conn.transaction():
                appointment_id = await store.claim_unsettled(conn, now, passed)
                if appointment_id is None:
                    break
                passed.append(appointment_id)
                if await store.LOCKS.try_hold(conn, appointment_id):
                    recorded = await settle(deps, conn, appointment_id)
            deps.unrecorded.forget(recorded)  # committed
    return len(passed)


async def fire_due_reminders(deps: NotificationsDeps) -> int:
    """Send each reminder that is due; returns how many were handled (sent or not)."""
    now = deps.clock()
    passed: list[uuid.UUID] = []  # busy, or postponed: next round's
    handled = 0
    async with deps.pool.acquire() as conn:
        while True:
            recorded: list[str] = []
            async with conn.transaction():
                due = await reminders.claim_due(conn, now, passed)
                if due is None:
                    return handled
                if not await store.LOCKS.try_hold(conn, due.appointment_id):
                    passed.append(due.appointment_id)  # a handler is on it right now
                    continue
                if await _fire(deps, conn, due, now, recorded) == "postponed":
                    passed.append(due.appointment_id)
            deps.unrecorded.forget(recorded)  # committed
            handled += 1


async def _fire(
    deps: NotificationsDeps,
    conn: asyncpg.Connection,
    due: reminders.DueReminder,
    now: datetime,
    recorded: list[str],
) -> str:
    """The reminder's outcome; the Message-ID of the dispatch it records goes in `recorded`
    (forgotten by `deps.unrecorded` once committed)."""
    state = await store.load_state(conn, due.appointment_id)
    appointment = state.appointment
    if appointment is None or not state.up_to_date() or appointment.start != due.start_at:
        # Cancelled, meeting gone, or a newer time not yet announced: settling reschedules.
        return await _finish(conn, due, "cancelled")
    if state.logged("reminder", due.revision, due.offset_minutes):
        return await _finish(conn, due, "sent")
    owed = Owed("reminder", due.revision)
    assert state.cause is not None  # the appointment is known here
    delivery = Delivery(deps, state, owed, cause=state.cause, offset=due.offset_minutes)
    if now >= appointment.start:
        if due.attempts:  # it was tried and the relay never took it: say so
            await dispatches.record(conn, delivery.failed("smtp_unavailable", due.last_error))
        return await _finish(conn, due, "expired")
    if await reminders.superseded(conn, due, now):
        return await _finish(conn, due, "skipped")
    try:
        dispatch = await delivery.send(now)
    except Transient as exc:
        # Never past the start: close to it, the next round tries again.
        until = min(now + retry_delay(deps, due.attempts), appointment.start)
        await reminders.postpone(conn, due, until, str(exc))
        log.warning("reminder %s-%d postponed: %s", due.appointment_id, due.offset_minutes, exc)
        return "postponed"
    await dispatches.record(conn, dispatch)
    recorded.append(dispatch.message_id)
    return await _finish(conn, due, dispatch.told.status)


async def _finish(conn: asyncpg.Connection, due: reminders.DueReminder, status: str) -> str:
    await reminders.finish(conn, due, status)
    return status
