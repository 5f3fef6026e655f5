"""Events handled together (the consumer's `on_batch`): at most one per appointment, as the
consumer's batches are, under one connection holding all their appointments' locks.

The common case, a request for an appointment meetings knows nothing of yet, goes set-wise: one
statement takes the locks, one reads what is known of every event (`store.known`), the meetings
are made together (`provision_many`: each Graph step of all of them in shared `$batch`es, no
transaction open meanwhile), their answers published as one produce batch, then one statement
writes every marker, meeting row and attendance due time (`store.complete_all`). Whatever else
— a change, an erasure, an appointment with held events or erased, a second request — is
handled one event at a time (`handlers.handle_locked`) on the same locked connection: rare,
and its rules are that module's.

A failure is one event's own (Graph's 429 or 5xx past its in-process retries, a refusal that
needs an operator, the token): its neighbours complete, then the batch raises, and the
consumer splits it down to that event alone (visio_runtime.batches). The split must not call
Graph again for it — that would ignore its Retry-After, once per halving — so the failure is
kept (`Failures`) and raised again, unchanged, when the event comes back in a part of the
batch; alone, it meets the consumer's fate of any failed record (retried later, or
dead-lettered if poison). Its neighbours, back in their halves, are found processed and
skipped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import asyncpg
from visio_runtime import defects
from visio_shared import AppointmentEvent, AppointmentRequested, Envelope
from visio_shared.publishing import publish_events

from visio_meetings import store
from visio_meetings.handlers import MeetingsDeps, handle_locked
from visio_meetings.meeting import Created, provision_many
from visio_meetings.outcomes import failed, made, refused_by_defect, refused_row
from visio_meetings.refusals import GraphRefused
from visio_meetings.store import Completion, Known

log = logging.getLogger(__name__)

Failed = list[tuple[AppointmentEvent, Exception]]


class EventsFailed(Exception):
    """Some events of a batch failed (each one's own failure is kept in `Failures`)."""


class Failures:
    """Each event's failure in the batch it failed in, until the consumer's split gives it back
    alone. Kept by the event object the consumer hands over (the same through every split; a
    later retry of the record is a new one, which tries again), for `keep_s` at most: a split
    stopped half-way (the service stopping) leaves nothing for long."""

    def __init__(self, keep_s: float = 300.0) -> None:
        self._keep_s = keep_s
        self._failed: dict[int, tuple[AppointmentEvent, Exception, float]] = {}

    def note(self, event: AppointmentEvent, failure: Exception) -> None:
        self._failed[id(event)] = (event, failure, time.monotonic())

    def holds(self, event: AppointmentEvent) -> bool:
        kept = self._failed.get(id(event))
        return kept is not None and kept[0] is event

    def take(self, event: AppointmentEvent) -> Exception | None:
        if not self.holds(event):
            return None
        return self._failed.pop(id(event))[1]

    def forget_old(self) -> None:
        oldest = time.monotonic() - self._keep_s
        for key in [key for key, (_, _, at) in self._failed.items() if at < oldest]:
            del self._failed[key]


async def handle_batch(
    events: Sequence[AppointmentEvent], deps: MeetingsDeps, failures: Failures
) -> None:
    """The batch's events, each once; raises if any failed (module docstring)."""
    failures.forget_old()
    fresh = [event for event in events if not failures.holds(event)]
    for event, failure in await _handle(fresh, deps) if fresh else []:
        failures.note(event, failure)
    if len(events) == 1:
        alone = failures.take(events[0])
        if alone is not None:
            raise alone
        return
    count = sum(failures.holds(event) for event in events)
    if count:
        raise EventsFailed(f"{count} of {len(events)} events failed, each its own way")


async def _handle(events: Sequence[AppointmentEvent], deps: MeetingsDeps) -> Failed:
    async with store.session_all(deps.pool, [event.appointment_id for event in events]) as conn:
        facts = await store.known(conn, events)
        new = [event for event in events if _is_new(event, facts[event.event_id])]
        made_together = {event.event_id for event in new}
        others = []
        for event in events:
            if _done_before(facts[event.event_id]):
                log.info("meetings: %s %s already handled", event.event_type, event.event_id)
            elif event.event_id not in made_together:
                others.append(event)
        failures = await _make_meetings(conn, deps, new) if new else []
        for event in others:
            try:
                await handle_locked(conn, deps, event)
            except Exception as exc:  # its own: the others go on
                failures.append((event, exc))
        return failures


def _is_new(event: AppointmentEvent, known: Known) -> bool:
    """A request for an appointment with no meeting that works, nothing held, not erased."""
    return (
        isinstance(event, AppointmentRequested)
        and not (known.processed or known.erased or known.holding)
        and known.status in (None, "failed")
    )


def _done_before(known: Known) -> bool:
    """Handled before, and nothing held since that the event's handling would apply."""
    return known.processed and not (known.erased or known.holding)


async def _make_meetings(
    conn: asyncpg.Connection, deps: MeetingsDeps, requests: Sequence[AppointmentEvent]
) -> Failed:
    """The requests' meetings made together; answered and completed, set-wise, but for those
    that failed (returned)."""
    specs = [deps.spec(event) for event in requests if isinstance(event, AppointmentRequested)]
    outcomes: Sequence[Created | Exception]
    if defects.on("MEETINGS_REFUSE_ALL"):  # tests of the proofs only: never in production
        outcomes = [refused_by_defect() for _ in specs]
    else:
        try:
            # Marked tried (and committed) before any create is sent: their look-ups skipped.
            untried = await store.first_attempts(conn, [spec.key for spec in specs])
            outcomes = await provision_many(deps.graph, specs, untried)
        except Exception as exc:  # the token, say: shared, but each event's failure
            outcomes = [exc] * len(specs)
    said: list[Envelope] = []
    completions: list[Completion] = []
    failures: Failed = []
    for event, spec, outcome in zip(requests, specs, outcomes, strict=True):
        if isinstance(outcome, Created):
            answer, row = made(event, spec, outcome)
        elif isinstance(outcome, GraphRefused):
            refused = refused_row(spec, event, outcome)
            answer, row = failed(event, outcome, refused)
        else:
            failures.append((event, outcome))
            continue
        said.append(answer)
        completions.append(Completion(event, row))
    # Published before the commit, as one event's answer is (`answers` says why).
    await publish_events(deps.publisher, deps.topics.meetings, said)
    await store.complete_all(conn, completions, deps.attendance_grace)
    return failures
