"""Step 2 for a batch, on real parts (PostgreSQL, the SMTP sink, the Brevo emulator): the
appointments of one batch are settled together — their states read, their dispatches, link
requests, reminders, texts and markers written — in statements whose number does not grow with
the batch, and one appointment whose settling fails holds back none of its neighbours."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import asyncpg
import pytest
from visio_notifications import delivery
from visio_notifications.handlers import on_events
from visio_notifications.poller import poll_once
from visio_runtime.batches import Batcher, BatchRoute, Item
from visio_shared import NotificationSent

MOBILE = "+33612345678"


class CountingPool:
    """The test's pool, counting the statements each connection it lends sends (BEGIN and
    COMMIT included): what PostgreSQL is asked, round trip by round trip."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.statements: list[str] = []

    def _log(self, record: Any) -> None:
        # Not asyncpg's look-ups of a type it meets first on a connection (once per connection).
        if not any(word in record.query for word in ("typeinfo_tree", "'jit'")):
            self.statements.append(record.query)

    def transactions(self) -> list[list[str]]:
        """The statements, one list per transaction (BEGIN to COMMIT)."""
        found: list[list[str]] = []
        for statement in self.statements:
            if statement.startswith("BEGIN"):
                found.append([])
            found[-1].append(statement)
        return found

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        async with self.pool.acquire() as conn:
            conn.add_query_logger(self._log)
            try:
                yield conn
            finally:
                conn.remove_query_logger(self._log)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pool, name)


def _texting(make: Any, appointment: Any) -> Any:
    user = appointment.user.model_copy(update={"mobile": MOBILE, "sms_opt_in": True})
    return appointment.model_copy(update={"user": user})


async def _statements_for_meetings(deps: Any, make: Any, n: int) -> int:
    """Statements of the batch of `n` MeetingReady that settles `n` booked appointments."""
    appointments = [_texting(make, make.appointment()) for _ in range(n)]
    await on_events(deps, appointments)
    counting = CountingPool(deps.pool)
    await on_events(
        replace(deps, pool=counting), [make.meeting(appointment) for appointment in appointments]
    )
    return len(counting.statements)


@pytest.mark.parametrize("texts", [False, True])
async def test_a_batch_of_meetings_settles_in_statements_that_do_not_grow_with_it(
    deps, sms_deps, make, mailbox, texts
) -> None:
    """A batch of 1 and a batch of 12 appointments' MeetingReady: each person gets their
    confirmation (and, opted in, its text and reminders), in as many statements either way."""
    chosen = sms_deps if texts else deps
    one = await _statements_for_meetings(chosen, make, 1)
    many = await _statements_for_meetings(chosen, make, 12)
    print(f"texts={texts}: batch of 1: {one} statements, batch of 12: {many}")
    assert len(mailbox.messages()) == 13
    assert many == one


async def _settled_flags(deps: Any, appointment_id: Any) -> asyncpg.Record:
    return await deps.pool.fetchrow(
        "SELECT settle_after, settle_attempts, settle_error FROM appointments "
        "WHERE appointment_id = $1",
        appointment_id,
    )


async def test_one_appointment_whose_settling_fails_holds_back_none_of_its_batch(
    deps, make, mailbox, publisher, monkeypatch
) -> None:
    """Through the runtime's batcher: one appointment's email cannot be composed (a poison
    record). Its four neighbours get their confirmation once and are announced once — on the
    first try, not after the split — and the batcher splits the batch down to the poison one,
    which alone fails, with its error, and stays to settle."""
    appointments = [make.appointment() for _ in range(5)]
    poison = appointments[2].appointment_id
    await on_events(deps, appointments)
    compose = delivery.compose_mail

    def failing(letter: Any, *args: Any, **kwargs: Any) -> Any:
        if letter.appointment.appointment_id == poison:
            raise ValueError("a template that cannot render this one")
        return compose(letter, *args, **kwargs)

    monkeypatch.setattr(delivery, "compose_mail", failing)
    handled: list[list[Any]] = []
    failed: list[tuple[Any, Exception]] = []

    async def on_failed(item: Item, exc: Exception) -> str:
        failed.append((item.event, exc))
        return "dead-lettered"

    batcher = Batcher(
        lambda items, _: handled.append([item.event for item in items]),
        on_failed,
        window_s=0.01,
        max_size=5,
    )
    route = BatchRoute(lambda events: on_events(deps, events), "meetings")
    meetings = [make.meeting(appointment) for appointment in appointments]
    outcomes = await asyncio.gather(
        *(batcher.submit(route, Item(event=meeting, context=None)) for meeting in meetings)
    )

    assert outcomes == ["handled", "handled", "dead-lettered", "handled", "handled"]
    [(event, exc)] = failed
    assert event.appointment_id == poison and isinstance(exc, ValueError)
    for appointment in appointments:
        if appointment.appointment_id != poison:
            mailbox.one(appointment.appointment_id, "confirmation")
            [sent] = publisher.events(appointment.appointment_id)
            assert isinstance(sent, NotificationSent)
    assert mailbox.messages(poison) == [] and publisher.events(poison) == []
    assert len(mailbox.messages()) == len(publisher.published) == 4
    assert (await _settled_flags(deps, poison))["settle_after"] is not None
    # The first try committed the neighbours: the split's tries found nothing more owed.
    dispatched = await deps.pool.fetchval("SELECT count(*) FROM dispatches")
    assert dispatched == 4

    monkeypatch.setattr(delivery, "compose_mail", compose)  # fixed: the poller finishes it
    await poll_once(deps)
    mailbox.one(poison, "confirmation")
    assert len(mailbox.messages()) == 5


async def test_a_relay_that_defers_one_email_postpones_that_appointment_alone(
    deps, make, mailbox, publisher, sink, clock
) -> None:
    """The relay answers 451 to one appointment's confirmation: the batch goes through, the
    other four are mailed and settled, that one is pushed back with the relay's answer, and the
    poller mails it once the relay takes it."""
    appointments = [make.appointment() for _ in range(5)]
    deferred = appointments[1].appointment_id
    await on_events(deps, appointments)
    sink.handler.defer_matching = re.compile(re.escape(str(deferred)))
    await on_events(deps, [make.meeting(appointment) for appointment in appointments])

    assert len(mailbox.messages()) == 4 and mailbox.messages(deferred) == []
    flags = await _settled_flags(deps, deferred)
    assert flags["settle_after"] > clock() and flags["settle_attempts"] == 1
    assert "451" in flags["settle_error"]
    for appointment in appointments:
        if appointment.appointment_id != deferred:
            assert (await _settled_flags(deps, appointment.appointment_id))["settle_after"] is None

    sink.handler.defer_matching = None
    clock.advance(seconds=deps.settings.mail_retry_max_s)
    await poll_once(deps)
    mailbox.one(deferred, "confirmation")
    assert len(mailbox.messages()) == len(publisher.published) == 5


async def test_two_batches_sharing_appointments_in_opposite_orders_settle_each_once(
    deps, make, mailbox
) -> None:
    """Two consumers' batches with the same appointments, listed in opposite orders, at once:
    both take their locks in one order, so neither waits on the other in a cycle (PostgreSQL
    would break one with a deadlock error), and each person is mailed once."""
    appointments = [make.appointment() for _ in range(8)]
    await on_events(deps, appointments)
    meetings = [make.meeting(appointment) for appointment in appointments]
    await asyncio.gather(on_events(deps, meetings), on_events(deps, meetings[::-1]))
    for appointment in appointments:
        mailbox.one(appointment.appointment_id, "confirmation")
    assert len(mailbox.messages()) == 8
