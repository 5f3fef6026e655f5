"""An email the relay took whose record was lost with its transaction (PostgreSQL's connection
cut between the send and the commit) is recorded by the next try, not sent again — and a move
to a new time that arrives first still owes « rescheduled », not a second « confirmation »
(the chaos proof of seed 2035). On the real relay path (SmtpMailer → the sink) and PostgreSQL."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from visio_notifications.decide import Told
from visio_notifications.deps import NotificationsDeps
from visio_notifications.dispatches import Dispatch
from visio_notifications.handlers import (
    on_appointment_changed,
    on_appointment_requested,
    on_meeting_event,
)
from visio_notifications.mime import Mail
from visio_notifications.poller import poll_once
from visio_notifications.unrecorded import Unrecorded
from visio_shared import NotificationSent

LOST = (asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)


def cut_after_sending(deps: NotificationsDeps, kinds: set[str]) -> NotificationsDeps:
    """The relay takes the email, then the settling transaction's connection is cut (what
    the chaos proof's fault proxy does): its dispatch is never committed."""
    send = deps.send_mail

    async def send_then_cut(mail: Mail) -> None:
        await send(mail)
        if any(f".{kind}" in mail.message_id for kind in kinds):
            kinds.clear()  # once
            async with deps.pool.acquire() as other:
                await other.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND state = 'idle in transaction' "
                    "AND pid <> pg_backend_pid()"
                )

    return dataclasses.replace(deps, send_mail=send_then_cut)


@pytest.mark.parametrize("first", ["retry", "move"], ids=["retried-first", "moved-first"])
async def test_an_email_taken_whose_record_was_lost_is_recorded_not_sent_again(
    deps: NotificationsDeps, make: Any, mailbox: Any, publisher: Any, clock: Any, first: str
) -> None:
    cutting = cut_after_sending(deps, {"confirmation"})
    appointment = make.appointment()
    await on_appointment_requested(cutting, appointment)
    with pytest.raises(LOST):
        await on_meeting_event(cutting, make.meeting(appointment))
    assert mailbox.keys(appointment.appointment_id) == ["r1.confirmation"]  # the relay has it

    if first == "retry":  # the consumer's retry of the event comes first
        await on_meeting_event(cutting, make.meeting(appointment))
        assert publisher.events(appointment.appointment_id)[0].kind == "confirmation"
    moved = make.rescheduled(appointment, 2, appointment.start + timedelta(days=1))
    await on_appointment_changed(cutting, moved)
    clock.advance(hours=1)
    await poll_once(cutting)

    assert mailbox.keys(appointment.appointment_id) == ["r1.confirmation", "r2.rescheduled"]
    assert [(e.kind, e.revision) for e in publisher.events(appointment.appointment_id)] == [
        ("confirmation", 1),
        ("rescheduled", 2),
    ]
    assert len(cutting.unrecorded) == 0  # each forgotten once committed


async def test_a_reminder_taken_whose_record_was_lost_is_not_sent_again(
    deps: NotificationsDeps, make: Any, mailbox: Any, clock: Any
) -> None:
    appointment = make.appointment()
    await on_appointment_requested(deps, appointment)
    await on_meeting_event(deps, make.meeting(appointment))
    cutting = cut_after_sending(deps, {"reminder"})
    clock.set(appointment.start - timedelta(minutes=59))
    with pytest.raises(LOST):
        await poll_once(cutting)
    await poll_once(cutting)

    keys = mailbox.keys(appointment.appointment_id)
    assert keys[0] == "r1.confirmation" and len([k for k in keys if "reminder" in k]) == 1
    assert len(cutting.unrecorded) == 0


async def test_an_email_remembered_whose_commit_did_land_is_forgotten_not_recorded_twice(
    deps: NotificationsDeps, make: Any, mailbox: Any
) -> None:
    """The commit landed but its answer was lost: the email stays remembered though logged.
    The next settling finds it in the log by its key and forgets it (a second row would break
    the log's one-row-per-email rule and fail every settling of that appointment)."""
    appointment = make.appointment()
    await on_appointment_requested(deps, appointment)
    await on_meeting_event(deps, make.meeting(appointment))
    deps.unrecorded.keep(_dispatch(1, appointment.appointment_id))  # r1's confirmation

    moved = make.rescheduled(appointment, 2, appointment.start + timedelta(days=1))
    await on_appointment_changed(deps, moved)

    assert mailbox.keys(appointment.appointment_id) == ["r1.confirmation", "r2.rescheduled"]
    assert len(deps.unrecorded) == 0


def test_the_memory_keeps_the_newest_and_forgets_what_is_committed() -> None:
    kept = Unrecorded(limit=2)
    dispatches = [_dispatch(n) for n in range(3)]
    for dispatch in dispatches:
        kept.keep(dispatch)
    assert [kept.get(d.message_id) for d in dispatches] == [None, *dispatches[1:]]
    kept.forget([dispatches[1].message_id])
    assert len(kept) == 1 and kept.of(dispatches[2].appointment_id) == [dispatches[2]]


def _dispatch(n: int, appointment_id: uuid.UUID | None = None) -> Dispatch:
    appointment_id = appointment_id or uuid.uuid4()
    told = Told("confirmation", 1, "sent", "", None, "computer", None, None, None, None)
    event = NotificationSent(
        appointment_id=appointment_id,
        revision=1,
        correlation_id=appointment_id,
        causation_id=appointment_id,
        kind="confirmation",
        message_id=f"<{n}@x>",
    )
    return Dispatch(appointment_id, f"<{n}@x>", told, event)
