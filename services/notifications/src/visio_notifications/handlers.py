"""What notifications does with each event: apply it to its own copy of the appointment (or of
the meeting), then send whatever email the new state calls for (`decide.owed`).

Two steps, two transactions, both under the per-appointment locks (events come in batches, one
per appointment: each step is one transaction for the whole batch, its locks taken in one order):

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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
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


# How each event other than a request or a meeting's word changes the appointment's copy, in
# step 1 (those two are written set-wise, one statement each for the batch).
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
    them in one transaction — their locks, markers, requests' and meetings' copies and settle
    flags each in one statement — then step 2 for all of them in another (`settle_many`).
    The events of an appointment whose person was erased are only marked processed, and a
    booking's first event, before anything else of it is known, settles nothing
    (`store.nothing_to_tell`). If some appointment's settling failed, the others' commits and
    their outcomes go out, then its error is raised: the batcher splits the batch down to it,
    and each neighbour, settled already, finds nothing more owed."""
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
        await store.request_settlements(
            conn,
            [(e.appointment_id, e.event_id) for e in new if e.appointment_id not in quiet],
            deps.clock(),
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
    appointment_ids = [e.appointment_id for e in events if e.appointment_id not in erased]
    # Also on a redelivery: it finishes what an earlier attempt could not.
    settling = [event for event in events if event.appointment_id not in quiet]
    failed: dict[uuid.UUID, Exception] = {}
    if settling:
        async with deps.pool.acquire() as conn, conn.transaction():
            await store.LOCKS.hold_all(conn, [event.appointment_id for event in settling])
            failed = await settle_many(deps, conn, settling)
    await publish_outcomes_of(deps, appointment_ids)
    for appointment_id, exc in failed.items():
        log.error("settling %s failed: %r", appointment_id, exc)
    if failed:
        raise next(iter(failed.values()))


async def settle(
    deps: NotificationsDeps, conn: asyncpg.Connection, appointment_id: uuid.UUID
) -> None:
    """`settle_many` for one appointment (the poller's retry); its failure is raised."""
    failed = await settle_many(deps, conn, [appointment_id])
    if failed:
        raise failed[appointment_id]


async def settle_many(
    deps: NotificationsDeps,
    conn: asyncpg.Connection,
    settling: Sequence[uuid.UUID | AppointmentEvent],
) -> dict[uuid.UUID, Exception]:
    """Send what each appointment's state calls for, then answer its pending link requests,
    then line its reminders and texts up. The caller holds their locks, in a transaction.

    Set-wise: the states of them all are read in a few statements, what each is owed is
    decided in Python (`decide`), the emails of a pass go out side by side (an appointment's
    in the event's trace, when settling follows an event), and each pass's dispatch log, link
    requests, then the reminders, texts and markers are written for all in one statement
    each. What an email changed in a state (its history, its answered request) is applied
    here rather than read again.

    An appointment whose relay is down is postponed alone (its flag stays, pushed back). One
    whose settling raised is left as it was, but for the emails logged before: its flag stays,
    and it is returned with its error, for the caller to raise once the others committed."""
    events = {item.appointment_id: item for item in settling if not isinstance(item, uuid.UUID)}
    appointment_ids = [
        item if isinstance(item, uuid.UUID) else item.appointment_id for item in settling
    ]
    now = deps.clock()
    loaded = await store.load_states(conn, appointment_ids)
    failed: dict[uuid.UUID, Exception] = {}
    await _close_unanswerable(conn, loaded, failed, now)
    # One email per pass: after it is logged the state may call for nothing more, or (rarely)
    # for one more, or one per pending link request; never for an endless series, since each
    # logged key is never owed again.
    passes = {key: 3 + len(one.state.link_requests) for key, one in loaded.items()}
    postponed: list[tuple[uuid.UUID, datetime, str]] = []
    active = [key for key in loaded if key not in failed]
    while active:
        settling_now = _Pass(deps, conn, loaded, events, now, failed, postponed)
        sent = await settling_now.send(active, passes)
        active = [dispatch.appointment_id for dispatch in sent]
    await store.postpone_settlements(conn, postponed)
    waiting = {key for key, _, _ in postponed}
    done = [key for key in loaded if key not in failed and key not in waiting]
    await _line_up(deps, conn, loaded, done, failed, now)
    await store.settled(conn, [key for key in done if key not in failed])
    return failed


@dataclass
class _Pass:
    """One pass of `settle_many`: at most one email per appointment, sent side by side, then
    logged for all, and applied to their states."""

    deps: NotificationsDeps
    conn: asyncpg.Connection
    loaded: dict[uuid.UUID, store.Loaded]
    events: dict[uuid.UUID, AppointmentEvent]
    now: datetime
    failed: dict[uuid.UUID, Exception]
    postponed: list[tuple[uuid.UUID, datetime, str]]

    async def send(
        self, active: Sequence[uuid.UUID], passes: dict[uuid.UUID, int]
    ) -> list[Dispatch]:
        owed: dict[uuid.UUID, decide.Owed] = {}
        for key in active:
            try:
                wanted = decide.owed(self.loaded[key].state)
            except Exception as exc:
                self.failed[key] = exc
                continue
            if wanted is not None and passes[key] > 0:
                owed[key] = wanted
                passes[key] -= 1
        outcomes = await asyncio.gather(
            *(
                _deliver(self.deps, self.loaded[key], wanted, self.now, self.events.get(key))
                for key, wanted in owed.items()
            ),
            return_exceptions=True,
        )
        sent: list[Dispatch] = []
        for (key, wanted), outcome in zip(owed.items(), outcomes, strict=True):
            if isinstance(outcome, Dispatch):
                sent.append(outcome)
            elif isinstance(outcome, Transient):
                self._postpone(key, wanted, outcome)
            elif isinstance(outcome, Exception):
                self.failed[key] = outcome
            else:  # cancelled: nothing of the batch commits
                raise outcome
        await self._log(sent)
        return sent

    def _postpone(self, key: uuid.UUID, wanted: decide.Owed, outcome: Transient) -> None:
        until = self.now + retry_delay(self.deps, self.loaded[key].attempts)
        self.postponed.append((key, until, str(outcome)))
        log.warning(
            "%s of %s r%d postponed until %s: %s",
            wanted.kind,
            key,
            wanted.revision,
            until.isoformat(),
            outcome,
        )

    async def _log(self, sent: list[Dispatch]) -> None:
        """The pass's dispatch log and answered link requests, then each state as it now is."""
        await dispatches.record_many(self.conn, sent)
        await link_requests.close_each(
            self.conn,
            [(d.told.request_id, d.told.status) for d in sent if d.told.request_id is not None],
            self.now,
        )
        for dispatch in sent:
            one = self.loaded[dispatch.appointment_id]
            one.state = replace(
                one.state,
                history=(*one.state.history, dispatch.told),
                link_requests=tuple(
                    request
                    for request in one.state.link_requests
                    if request.event_id != dispatch.told.request_id
                ),
            )


async def _line_up(
    deps: NotificationsDeps,
    conn: asyncpg.Connection,
    loaded: dict[uuid.UUID, store.Loaded],
    done: Sequence[uuid.UUID],
    failed: dict[uuid.UUID, Exception],
    now: datetime,
) -> None:
    """The settled appointments' reminders and texts, lined up for all in a few statements."""
    settings = deps.settings
    reminders_wanted: list[reminders.Wanted] = []
    texts_wanted: list[sms.Planned] = []
    for key in done:
        state = loaded[key].state
        try:
            wanted_reminders = reminders.wanted(state, settings.reminder_offsets_minutes, now)
            wanted_texts = sms.wanted(state, settings, now)
        except Exception as exc:
            failed[key] = exc
            continue
        if wanted_reminders is not None:
            reminders_wanted.append(wanted_reminders)
        if wanted_texts is not None:
            texts_wanted.append(wanted_texts)
    await reminders.sync(conn, reminders_wanted, settings.reminder_offsets_minutes)
    await sms.plan_many(conn, texts_wanted)


async def _deliver(
    deps: NotificationsDeps,
    one: store.Loaded,
    owed: decide.Owed,
    now: datetime,
    event: AppointmentEvent | None,
) -> Dispatch:
    """Send one owed email; `Transient` when the relay may take it later."""
    cause = owed.request.event_id if owed.request is not None else one.cause
    assert cause is not None  # known appointment: it has an event
    # In the trace of the event that called for it: the email joins that person's story.
    with tracing.within(event) if event is not None else contextlib.nullcontext():
        return await Delivery(deps, one.state, owed, cause=cause).send(now)


async def _close_unanswerable(
    conn: asyncpg.Connection,
    loaded: dict[uuid.UUID, store.Loaded],
    failed: dict[uuid.UUID, Exception],
    now: datetime,
) -> None:
    """Pending link requests that will get no email: recorded with the reason (one statement
    for all), dropped from their states, and logged (ids only: the person asked, nothing more
    is said of them)."""
    closing: list[tuple[uuid.UUID, decide.LinkRequest, str]] = []
    for key, one in loaded.items():
        try:
            reasons = [
                (request, decide.unanswerable(one.state, request, now))
                for request in one.state.link_requests
            ]
        except Exception as exc:
            failed[key] = exc
            continue
        closing += [(key, request, why) for request, why in reasons if why is not None]
    await link_requests.close_each(
        conn, [(request.event_id, why) for _, request, why in closing], now
    )
    for key, request, why in closing:
        one = loaded[key]
        one.state = replace(
            one.state,
            link_requests=tuple(r for r in one.state.link_requests if r is not request),
        )
        log.info("link request %s of %s: no email (%s)", request.event_id, key, why)


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
