"""What notifications does with each event: apply it to its own copy of the appointment (or of
the meeting), then send whatever email the new state calls for (`decide.owed`).

Two steps, two transactions, both under the per-appointment lock (events come in batches, one
per appointment: each step is one transaction for the whole batch):

1. the event's effect, its processed-event marker and a "to settle" flag commit together, so
   a redelivered event finds its marker and changes nothing;
2. settling sends the owed email and records it in the dispatch log (one row per key, with its
   deterministic Message-ID), then lines the reminders up with the new state. If the relay
   cannot take the email now, the flag stays, pushed back, and the poller tries again later:
   an SMTP outage neither blocks the partition nor dead-letters anything.

A request for the email again (AppointmentLinkRequested) goes the same way: its row and its
marker commit together, and settling answers it with one `link_resent` email — or, if the
appointment is unknown here, or cancelled or over for a mere resend, with the reason none was
sent. A fresh link after the appointment gets « Mes consentements » alone (`decide`).

Outcome events are written with the dispatch and published after the commit (a small outbox),
so a Kafka hiccup never loses one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import typing
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from visio_runtime import tracing
from visio_runtime.db import mark_processed_many
from visio_runtime.erasure import erased_among
from visio_runtime.errors import Transient
from visio_shared import (
    AppointmentEvent,
    AppointmentLinkRequested,
    AppointmentRequested,
    MeetingFailed,
    MeetingReady,
    parse_event,
    publish_event,
    publish_events,
)

from visio_notifications import decide, dispatches, link_requests, reminders, sms, store
from visio_notifications.delivery import Delivery, retry_delay
from visio_notifications.deps import NotificationsDeps
from visio_notifications.dispatches import Dispatch

__all__ = [
    "NotificationsDeps",
    "on_appointment_changed",
    "on_appointment_requested",
    "on_link_requested",
    "on_meeting_event",
]

log = logging.getLogger(__name__)


async def on_appointment_requested(deps: NotificationsDeps, event: AppointmentRequested) -> None:
    await on_events(deps, [event])


async def on_appointment_changed(deps: NotificationsDeps, event: store.AppointmentChange) -> None:
    await on_events(deps, [event])


async def on_meeting_event(deps: NotificationsDeps, event: MeetingReady | MeetingFailed) -> None:
    await on_events(deps, [event])


async def on_link_requested(deps: NotificationsDeps, event: AppointmentLinkRequested) -> None:
    await on_events(deps, [event])


# How each event other than a request or a meeting's word (set-wise, for the whole batch)
# changes the appointment's copy, in step 1.
APPLY: dict[type[AppointmentEvent], Callable[[asyncpg.Connection, Any], Awaitable[None]]] = {
    **dict.fromkeys(typing.get_args(store.AppointmentChange), store.apply_change),
    AppointmentLinkRequested: link_requests.save,
}
HANDLED: tuple[type[AppointmentEvent], ...] = (
    AppointmentRequested,
    MeetingReady,
    MeetingFailed,
    *APPLY,
)


async def on_events(deps: NotificationsDeps, events: Sequence[AppointmentEvent]) -> None:
    """A batch of events (the consumer's `on_batch`: one per appointment), step 1 for all of
    them in one transaction — their locks, markers, requests' copies and settle flags each in
    one statement — then step 2 for each appointment, side by side, each under its own lock.
    The events of an appointment whose person was erased are only marked processed, and a
    booking's first event, before anything else of it is known, settles nothing
    (`store.nothing_to_tell`)."""
    async with deps.pool.acquire() as conn, conn.transaction():
        await store.LOCKS.hold_all(conn, [event.appointment_id for event in events])
        fresh = await mark_processed_many(conn, events)
        # Erased: a replayed or late event stores nothing and sends nothing (marked processed).
        erased = await erased_among(conn, [event.appointment_id for event in events])
        new = [
            event
            for event in events
            if event.event_id in fresh and event.appointment_id not in erased
        ]
        requests = [event for event in new if isinstance(event, AppointmentRequested)]
        await store.save_requested_many(conn, requests)
        await store.save_meetings(
            conn, [event for event in new if isinstance(event, MeetingReady | MeetingFailed)]
        )
        for event in new:
            if type(event) in APPLY:
                await APPLY[type(event)](conn, event)
        # A booking's first event, before its meeting: nothing to send, nothing to plan.
        quiet = await store.nothing_to_tell(conn, [event.appointment_id for event in requests])
        # Step 2 settles them at once; the poller only after the handover, if it did not.
        await store.request_settlements(
            conn,
            [(e.appointment_id, e.event_id) for e in new if e.appointment_id not in quiet],
            deps.clock() + timedelta(seconds=deps.settings.settle_handover_s),
        )
    for event in events:
        if event.appointment_id in erased:
            log.info("%s of an erased appointment skipped", event.event_type)
        elif event.event_id not in fresh:
            log.info(
                "%s %s already processed",
                event.event_type,
                event.event_id,
                extra={"correlation_id": str(event.correlation_id)},
            )
    # Also on a redelivery: it finishes what an earlier attempt could not.
    settling = [event for event in events if event.appointment_id not in quiet]
    await _settle_together(deps, settling)
    # A quiet one has no outcome to publish: it had no dispatch under its lock in step 1, and
    # step 2 left it alone. A batch of first requests (a backlog's) costs no outbox look-up.
    appointment_ids = [e.appointment_id for e in settling if e.appointment_id not in erased]
    if appointment_ids:
        await publish_outcomes_of(deps, appointment_ids)


async def _settle_together(deps: NotificationsDeps, events: Sequence[AppointmentEvent]) -> None:
    """Step 2 for the batch: one transaction, the appointments' locks in one statement."""
    causes = {event.appointment_id: event for event in events}
    if not causes:
        return
    async with deps.pool.acquire() as conn:
        async with conn.transaction():
            await store.LOCKS.hold_all(conn, causes)
            recorded = await settle_many(deps, conn, list(causes), causes)
        deps.unrecorded.forget(recorded)  # committed


async def settle(
    deps: NotificationsDeps, conn: asyncpg.Connection, appointment_id: uuid.UUID
) -> list[str]:
    """`settle_many` for one appointment."""
    return await settle_many(deps, conn, [appointment_id])


@dataclass
class _Settling:
    """One appointment being settled: its state as its emails go out, what they were."""

    appointment_id: uuid.UUID
    state: decide.State
    sent: list[tuple[Dispatch, decide.LinkRequest | None]] = field(default_factory=list)
    postponed: tuple[decide.Owed, Transient] | None = None  # the email the relay did not take


async def settle_many(
    deps: NotificationsDeps,
    conn: asyncpg.Connection,
    appointment_ids: Sequence[uuid.UUID],
    causes: Mapping[uuid.UUID, AppointmentEvent] | None = None,
) -> list[str]:
    """Send what each appointment's state calls for, then answer its pending link requests,
    then line its reminders up. The caller holds the appointments' locks, in a transaction,
    and once it commits forgets the Message-IDs returned, whose dispatches it recorded
    (`deps.unrecorded`).

    The states are read in one statement; the emails of different appointments go out side by
    side (the mailer's connections), with no statement while they do; what they were is then
    written for all of them together — the dispatch log, the reminders and the settle flags
    each in one round trip. `causes`: the event each appointment is settled for, whose trace
    its emails join."""
    now = deps.clock()
    states = await store.load_states(conn, appointment_ids)
    recorded: list[str] = []
    for appointment_id in appointment_ids:
        state, taken = await _record_taken(deps, conn, states[appointment_id], appointment_id, now)
        recorded += taken
        if await _close_unanswerable(conn, state, appointment_id, now):
            state = await store.load_state(conn, appointment_id)
        states[appointment_id] = state
    settling = [
        _Settling(appointment_id, states[appointment_id]) for appointment_id in appointment_ids
    ]
    # An email is composed when it can soon go out: twice as many as the relay's connections
    # at once, not a batch's hundreds held in memory while they wait for one.
    slots = asyncio.Semaphore(2 * deps.settings.smtp_max_connections)

    async def send(one: _Settling) -> None:
        async with slots:
            await _send_owed(deps, one, now, (causes or {}).get(one.appointment_id))

    outcomes = await asyncio.gather(*(send(one) for one in settling), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):  # after every other send has ended
            raise outcome
    await dispatches.record_many(conn, [dispatch for one in settling for dispatch, _ in one.sent])
    recorded += [dispatch.message_id for one in settling for dispatch, _ in one.sent]
    for one in settling:
        for dispatch, request in one.sent:
            if request is not None:
                await link_requests.close(conn, [request.event_id], dispatch.told.status, now)
    for one in settling:
        if one.postponed is not None:
            await _postpone(deps, conn, one.appointment_id, one.postponed, now)
    done = [one for one in settling if one.postponed is None]
    states_now = [one.state for one in done]
    await reminders.sync_many(conn, states_now, deps.settings.reminder_offsets_minutes, now)
    for state in states_now:
        await sms.plan(conn, state, deps.settings, now)
    await store.settled(conn, [one.appointment_id for one in done])
    return recorded


async def _send_owed(
    deps: NotificationsDeps, one: _Settling, now: datetime, cause: AppointmentEvent | None
) -> None:
    """The appointment's owed emails, one after the other, with no statement: each sent
    changes `one.state` as its record will (its log, its request); a relay that cannot take
    one now stops there (`one.postponed`)."""
    # One email per pass: after it is logged the state may call for nothing more, or (rarely)
    # for one more, or one per pending link request; never for an endless series, since each
    # logged key is never owed again.
    with tracing.within(cause) if cause is not None else contextlib.nullcontext():
        for _ in range(3 + len(one.state.link_requests)):
            state = one.state
            owed = decide.owed(state)
            if owed is None:
                return
            email_cause = owed.request.event_id if owed.request is not None else state.cause
            assert email_cause is not None  # an email is owed only for an appointment known here
            try:
                dispatch = await Delivery(deps, state, owed, cause=email_cause).send(now)
            except Transient as exc:
                one.postponed = (owed, exc)
                return
            one.sent.append((dispatch, owed.request))
            one.state = state.with_email(dispatch.told, answered=owed.request)


async def _postpone(
    deps: NotificationsDeps,
    conn: asyncpg.Connection,
    appointment_id: uuid.UUID,
    postponed: tuple[decide.Owed, Transient],
    now: datetime,
) -> None:
    """The relay could not take an email of the appointment now: the poller tries again."""
    owed, exc = postponed
    failures = await store.settle_attempts(conn, appointment_id)
    until = now + retry_delay(deps, failures)
    await store.postpone_settlement(conn, appointment_id, until, str(exc))
    log.warning(
        "%s of %s r%d postponed until %s: %s",
        owed.kind,
        appointment_id,
        owed.revision,
        until.isoformat(),
        exc,
    )


async def _record_taken(
    deps: NotificationsDeps,
    conn: asyncpg.Connection,
    state: decide.State,
    appointment_id: uuid.UUID,
    now: datetime,
) -> tuple[decide.State, list[str]]:
    """Emails of the appointment the relay took on an earlier try whose record was lost
    (visio_notifications.unrecorded), recorded first: what the person has, whatever changed
    since — a move to a new time then owes « rescheduled », not a second « confirmation »."""
    recorded: list[str] = []
    for dispatch in deps.unrecorded.of(appointment_id):
        told = dispatch.told
        if any(_key(told) == _key(logged) for logged in state.history):  # committed after all
            deps.unrecorded.forget([dispatch.message_id])
            continue
        await dispatches.record(conn, dispatch)
        recorded.append(dispatch.message_id)
        request = next((r for r in state.link_requests if r.event_id == told.request_id), None)
        if request is not None:
            await link_requests.close(conn, [request.event_id], told.status, now)
        state = state.with_email(told, answered=request)
        log.info(
            "%s of %s r%d: the relay took it before, recorded now",
            told.kind,
            appointment_id,
            told.revision,
        )
    return state, recorded


def _key(told: decide.Told) -> tuple[object, ...]:
    """An email's key in the dispatch log (one row each: `dispatches_one_email_per_key`)."""
    return (told.kind, told.revision, told.reminder_offset_minutes, told.request_id)


async def _close_unanswerable(
    conn: asyncpg.Connection, state: decide.State, appointment_id: uuid.UUID, now: datetime
) -> bool:
    """Pending link requests that will get no email: recorded with the reason, and logged
    (ids only: the person asked, nothing more is said of them). True if there were any."""
    closed = False
    for request in state.link_requests:
        why = decide.unanswerable(state, request, now)
        if why is None:
            continue
        await link_requests.close(conn, [request.event_id], why, now)
        log.info("link request %s of %s: no email (%s)", request.event_id, appointment_id, why)
        closed = True
    return closed


async def publish_outcomes_of(deps: NotificationsDeps, appointment_ids: list[uuid.UUID]) -> int:
    """Publish the outcomes of these appointments not yet on Kafka, as one produce batch (one
    appointment's in their order); returns how many. As below, only a crash between the
    publish and the commit gives a duplicate, with the same event_id."""
    async with deps.pool.acquire() as conn, conn.transaction():
        claimed = await dispatches.claim_unpublished_of(conn, appointment_ids)
        if not claimed:
            return 0
        events = [parse_event(payload) for _, payload in claimed]
        await publish_events(deps.publisher, deps.topics.notifications, events)
        await dispatches.mark_all_published(conn, [dispatch_id for dispatch_id, _ in claimed])
    return len(claimed)


async def publish_outcomes(deps: NotificationsDeps, appointment_id: uuid.UUID | None = None) -> int:
    """Publish the NotificationSent / NotificationFailed not yet on Kafka (of one appointment,
    or all of them), one row lock each; returns how many. Only a crash between the publish and
    the commit gives a duplicate, with the same event_id, which consumers skip."""
    published = 0
    async with deps.pool.acquire() as conn:
        while True:
            async with conn.transaction():
                claimed = await dispatches.claim_unpublished(conn, appointment_id)
                if claimed is None:
                    return published
                dispatch_id, payload = claimed
                await publish_event(deps.publisher, deps.topics.notifications, parse_event(payload))
                await dispatches.mark_published(conn, dispatch_id)
            published += 1
