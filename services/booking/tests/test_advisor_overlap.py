"""One advisor, one appointment at a time (migration 007's exclusion constraint) on real
PostgreSQL and the real broker: of two overlapping bookings sent at once exactly one is taken,
the other answered 409 (a BookingRejected reply over Kafka); a reschedule or a change of advisor
into an overlap is refused; back-to-back appointments and a cancelled one's slot are free."""

from __future__ import annotations

import asyncio
import uuid
import zoneinfo
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from visio_booking import store
from visio_booking.appointments import HANDLERS

from .test_api import PROBLEM, problem_of
from .test_kafka import replies, request, send

PARIS = zoneinfo.ZoneInfo("Europe/Paris")


def at(days: int, hour: int, minute: int = 0) -> str:
    day = (datetime.now(UTC) + timedelta(days=days)).astimezone(PARIS)
    return day.replace(hour=hour, minute=minute, second=0, microsecond=0).isoformat()


def advisor() -> dict[str, str]:
    return {"id": str(uuid.uuid4()), "display_name": "Claire Martin"}


def refused_as_overlap(answer: Any) -> None:
    problem = problem_of(answer, 409)
    assert problem["type"] == PROBLEM + "advisor-unavailable"
    assert problem["title"] == "The advisor already has an appointment at that time"
    assert "already has a live appointment that overlaps this slot" in problem["detail"]


async def test_of_two_overlapping_bookings_sent_at_once_exactly_one_is_taken(
    booking: Any,
) -> None:
    claire = advisor()
    bodies = [
        booking.body(advisor=claire, start=at(5, 10), duration_minutes=30),
        booking.body(advisor=claire, start=at(5, 10, 15), duration_minutes=30),
    ]
    answers = await asyncio.gather(
        *(
            booking.client.post("/v1/appointments", json=body, headers=booking.auth())
            for body in bodies
        )
    )
    assert sorted(answer.status_code for answer in answers) == [202, 409]
    refused_as_overlap(next(answer for answer in answers if answer.status_code == 409))
    rows = await booking.sql("SELECT status FROM appointments WHERE advisor_id = $1", claire["id"])
    assert [row["status"] for row in rows] == ["requested"], "the refused one left nothing"


async def test_a_booking_aborted_by_a_deadlock_is_written_again(
    booking: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two overlapping bookings written at once may each wait for the other's row under the
    exclusion constraint; PostgreSQL aborts one with a deadlock error (seen in CI: a 500 where
    a 409 was due). The aborted one wrote nothing: it is written again, and decided then."""
    real_book = store.book
    deadlocks = [asyncpg.DeadlockDetectedError("deadlock detected")]

    async def book_after_a_deadlock(*args: Any) -> str:
        if deadlocks:
            raise deadlocks.pop()
        return await real_book(*args)

    monkeypatch.setattr(store, "book", book_after_a_deadlock)
    claire = advisor()
    body = booking.body(advisor=claire, start=at(8, 10))
    answer = await booking.client.post("/v1/appointments", json=body, headers=booking.auth())
    assert answer.status_code == 202, answer.text
    assert deadlocks == []
    rows = await booking.sql("SELECT status FROM appointments WHERE advisor_id = $1", claire["id"])
    assert [row["status"] for row in rows] == ["requested"]

    # Deadlocked again and again: an error after three writes, never a wait without end.
    attempts = []

    async def always_deadlocked(*args: Any) -> str:
        attempts.append(args)
        raise asyncpg.DeadlockDetectedError("deadlock detected")

    monkeypatch.setattr(store, "book", always_deadlocked)
    body = booking.body(advisor=advisor(), start=at(8, 12))
    with pytest.raises(asyncpg.DeadlockDetectedError):
        await booking.client.post("/v1/appointments", json=body, headers=booking.auth())
    assert len(attempts) == 3


async def test_a_reschedule_aborted_by_a_deadlock_is_written_again(
    booking: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for a change (its transaction: the lock, the check, the new row, the outbox):
    written again as a whole, it is carried out once."""
    moving = await booking.book(advisor=advisor(), start=at(9, 14), duration_minutes=30)
    real_reschedule = HANDLERS["RescheduleAppointment"]
    deadlocks = [asyncpg.DeadlockDetectedError("deadlock detected")]

    async def reschedule_after_a_deadlock(*args: Any) -> Any:
        outcome = await real_reschedule(*args)  # written, then aborted: rolled back
        if deadlocks:
            raise deadlocks.pop()
        return outcome

    monkeypatch.setitem(HANDLERS, "RescheduleAppointment", reschedule_after_a_deadlock)
    moved = await booking.client.post(
        f"/v1/appointments/{moving}/reschedule", json={"start": at(9, 16)}, headers=booking.auth()
    )
    assert moved.status_code == 202, moved.text
    assert deadlocks == []
    assert (await booking.view(moving))["revision"] == 2, "carried out once"


async def test_many_requests_for_one_slot_at_once_leave_one_appointment(booking: Any) -> None:
    claire, start = advisor(), at(6, 14)
    answers = await asyncio.gather(
        *(
            booking.client.post(
                "/v1/appointments",
                json=booking.body(advisor=claire, start=start, subject=f"Essai {n}"),
                headers=booking.auth(),
            )
            for n in range(6)
        )
    )
    assert sorted(answer.status_code for answer in answers) == [202] + [409] * 5
    rows = await booking.sql("SELECT 1 FROM appointments WHERE advisor_id = $1", claire["id"])
    assert len(rows) == 1


async def test_back_to_back_appointments_and_another_advisor_are_accepted(booking: Any) -> None:
    claire = advisor()
    first = await booking.book(advisor=claire, start=at(7, 9), duration_minutes=30)
    # Ends when the next starts: [09:00, 09:30) and [09:30, 10:00) do not overlap.
    await booking.book(advisor=claire, start=at(7, 9, 30), duration_minutes=30)
    await booking.book(advisor=claire, start=at(7, 8, 30), duration_minutes=30)
    # The same slot with another advisor.
    await booking.book(advisor=advisor(), start=at(7, 9), duration_minutes=30)
    # Once cancelled, its slot is free again.
    cancel = await booking.client.post(
        f"/v1/appointments/{first}/cancel", json={"reason": "user"}, headers=booking.auth()
    )
    assert cancel.status_code == 202, cancel.text
    await booking.book(advisor=claire, start=at(7, 9, 10), duration_minutes=20)


async def test_a_reschedule_or_a_reassignment_into_an_overlap_is_refused(booking: Any) -> None:
    claire, paul = advisor(), advisor()
    await booking.book(advisor=claire, start=at(8, 10), duration_minutes=60)
    moving = await booking.book(advisor=claire, start=at(8, 14), duration_minutes=30)
    url = f"/v1/appointments/{moving}"

    into = await booking.client.post(
        f"{url}/reschedule", json={"start": at(8, 10, 30)}, headers=booking.auth()
    )
    refused_as_overlap(into)
    longer = await booking.client.post(
        f"{url}/reschedule", json={"start": at(8, 11), "duration_minutes": 120},
        headers=booking.auth(),
    )  # fmt: skip
    assert longer.status_code == 202, "ends at 13:00, after the other one's end at 11:00"
    assert (await booking.view(moving))["revision"] == 2, "the refused one changed nothing"

    await booking.book(advisor=paul, start=at(8, 12), duration_minutes=30)
    reassigned = await booking.client.post(
        f"{url}/reassign", json={"advisor": paul}, headers=booking.auth()
    )
    refused_as_overlap(reassigned)
    assert (await booking.view(moving))["advisor"]["id"] == claire["id"]


async def test_over_kafka_an_overlap_is_a_booking_rejected_reply(booking: Any) -> None:
    claire = advisor()
    await booking.book(advisor=claire, start=at(9, 10), duration_minutes=30)
    book = request("BookAppointment", booking.body(advisor=claire, start=at(9, 10, 20)))
    await send(booking, book)
    (rejected,) = await replies(booking, book["request_id"])
    assert rejected["event_type"] == "BookingRejected" and rejected["status"] == 409
    assert rejected["type"] == PROBLEM + "advisor-unavailable"
    assert "already has a live appointment that overlaps this slot" in rejected["detail"]


async def test_rows_that_overlapped_before_the_rule_do_not_stop_the_migration(
    booking: Any,
) -> None:
    """Migration 007 keeps the earliest of rows that already overlapped under the rule and
    marks the later ones; a marked row that moves has its new slot checked."""
    claire = advisor()
    conn = await asyncpg.connect(booking.owner_dsn, server_settings={"search_path": "booking"})
    try:
        first = await booking.book(advisor=claire, start=at(10, 10))
        # As before 007: nothing stopped an overlap.
        await conn.execute(
            "ALTER TABLE appointments DROP CONSTRAINT appointments_advisor_no_overlap"
        )
        second = await booking.book(advisor=claire, start=at(10, 10, 10))
        # 007 from the marking on, as it runs in production over such rows.
        await conn.execute(migration_007().split("DEFAULT false;", 1)[1])
        marked = await conn.fetch(
            "SELECT appointment_id::text, overlap_grandfathered FROM appointments "
            "WHERE advisor_id = $1 ORDER BY created_at",
            claire["id"],
        )
    finally:
        await conn.close()
    assert [tuple(row) for row in marked] == [(first, False), (second, True)]
    # The constraint holds again for every new write, the marked row's next move included.
    refused_as_overlap(
        await booking.client.post(
            "/v1/appointments", json=booking.body(advisor=claire, start=at(10, 9, 45)),
            headers=booking.auth(),
        )
    )  # fmt: skip
    refused_as_overlap(
        await booking.client.post(
            f"/v1/appointments/{second}/reschedule", json={"start": at(10, 10, 20)},
            headers=booking.auth(),
        )
    )  # fmt: skip
    away = await booking.client.post(
        f"/v1/appointments/{second}/reschedule", json={"start": at(10, 15)}, headers=booking.auth()
    )
    assert away.status_code == 202, away.text


def migration_007() -> str:
    from visio_booking.store import SCHEMA

    return (SCHEMA.sql_dir / "007_advisor_overlap.sql").read_text(encoding="utf-8")
