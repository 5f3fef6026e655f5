"""One way in for every request, HTTP or Kafka: the idempotency key, the change and its outbox
rows (and, for Kafka, the reply) commit together or not at all.

A booking — most of what arrives — takes one statement (store.book): the API key checked, the
idempotency key claimed with its answer, the appointment, its history, its event and the
reply, in one round trip. The changes to an appointment lock its row and read it first, in a
transaction of a few statements."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import pydantic
from visio_runtime.api_keys import unknown_key
from visio_runtime.problems import Problem

from visio_booking import idempotency, store
from visio_booking.appointments import HANDLERS, Caller, Command, Context, accepted, advisor_free
from visio_booking.appointments import booking as booking_event
from visio_booking.idempotency import Outcome
from visio_booking.keys import API_KEYS
from visio_booking.outbox import OutboxRow, enqueue

log = logging.getLogger(__name__)

# Run inside the request's transaction once its outcome is known (the self-service pages check
# that their link still holds). Never for a booking: see `Reply`.
AlsoInTransaction = Callable[[asyncpg.Connection, Outcome], Awaitable[None]]
# The answer a Kafka caller gets for an outcome, written to the outbox with the request's
# effect; None to send none (a proof's lost reply).
Reply = Callable[[Outcome], OutboxRow | None]


async def execute(
    pool: asyncpg.Pool,
    ctx: Context,
    caller: Caller,
    command: Command,
    also: AlsoInTransaction | None = None,
    reply: Reply | None = None,
) -> Outcome:
    """Carry out one request exactly once per idempotency key; refusals raise."""
    key_field = "request_id" if caller.channel == "kafka" else "Idempotency-Key"
    print_ = idempotency.fingerprint(command.request_type, command.appointment_id, command.payload)
    if command.request_type == "BookAppointment":
        assert also is None, "a booking is one statement: nothing else runs in its transaction"
        return await _book(pool, ctx, caller, command, print_, key_field, reply)
    handler = HANDLERS[command.request_type]
    key = command.idempotency_key

    async def carry_out() -> Outcome:
        async with pool.acquire() as conn:
            # A repeat is answered before anything is validated again: the first answer stands
            # even if the request would no longer pass (its start has come closer, say).
            if key and (
                stored := await idempotency.lookup(conn, caller.name, key, print_, key_field)
            ):
                return await _answer(conn, stored, also, reply)
            async with conn.transaction():
                if key:
                    twin = await idempotency.claim(
                        conn, caller.name, key, print_, command.request_type, key_field
                    )
                    if twin is not None:
                        await _after(conn, twin, also, reply)
                        return twin
                outcome = await handler(conn, ctx, caller, command)
                if key:
                    await idempotency.remember(conn, caller.name, key, outcome)
                await _after(conn, outcome, also, reply)
            return outcome

    return await _written_again(carry_out, command.request_type)


async def _book(
    pool: asyncpg.Pool,
    ctx: Context,
    caller: Caller,
    command: Command,
    print_: str,
    key_field: str,
    reply: Reply | None,
) -> Outcome:
    """A booking in one statement. It is validated first, without the database: a repeat of
    a request that would no longer pass still gets its first answer, as every repeat does,
    from the look-up made then (the only case with a look-up first)."""
    key = command.idempotency_key
    try:
        event = booking_event(ctx, caller, command)
    except (Problem, pydantic.ValidationError):
        await check_kept_key(pool, caller)
        if key:
            async with pool.acquire() as conn:
                stored = await idempotency.lookup(conn, caller.name, key, print_, key_field)
                if stored:
                    return await _answer(conn, stored, None, reply)
        raise
    outcome = accepted(event.appointment_id, event.revision, "requested")
    rows = [OutboxRow(ctx.topics.appointments, event)]
    if reply and (answer := reply(outcome)):
        rows.append(answer)
    claim = store.Claim(caller.name, key, print_, outcome.json()) if key else None
    async with pool.acquire() as conn:

        async def write() -> str:  # an overlap refused as a 409, a deadlock written again
            async with advisor_free(conn, event.advisor.id):
                return await store.book(conn, event, caller.key_id, claim, rows)

        result = await _written_again(write, f"booking {event.event_id}")
        if result == "booked":
            return outcome
        if result == "api-key-revoked":
            raise unknown_key()
        # The key was taken, by an earlier request or a twin that committed while we waited.
        assert key is not None
        stored = await idempotency.lookup(conn, caller.name, key, print_, key_field)
        assert stored is not None, "a committed key always has its answer"
        return await _answer(conn, stored, None, reply)


# Two requests of one advisor's overlapping slots, written at once, may each find the other's
# uncommitted row under the exclusion constraint and wait for it: PostgreSQL breaks the tie by
# aborting one with a deadlock error. That one's transaction wrote nothing; written again, it
# meets the other's committed row and is refused as any overlap is (409), or, if the other
# rolled back, carried out.
_DEADLOCK_ATTEMPTS = 3

T = TypeVar("T")


async def _written_again(write: Callable[[], Awaitable[T]], what: str) -> T:
    """`write` (one transaction, nothing outside the database), written again when PostgreSQL
    aborted it as one side of a deadlock; after three in a row, the error goes out."""
    attempt = 1
    while True:
        try:
            return await write()
        except asyncpg.DeadlockDetectedError:
            if attempt == _DEADLOCK_ATTEMPTS:
                raise
            attempt += 1
            log.info("%s: deadlock with another request, written again", what)


async def check_kept_key(pool: asyncpg.Pool, caller: Caller) -> None:
    """Before a refusal, a key whose holder came from memory is looked up: a revoked key gets
    its 401 and nothing else, as if it had been looked up first."""
    if caller.key_id is not None and not caller.key_checked:
        if not await API_KEYS.unrevoked(pool, caller.key_id):
            raise unknown_key()


async def _answer(
    conn: asyncpg.Connection,
    outcome: Outcome,
    also: AlsoInTransaction | None,
    reply: Reply | None,
) -> Outcome:
    """An earlier answer, again (a Kafka caller gets its reply again, marked replayed)."""
    if also:
        async with conn.transaction():
            await _after(conn, outcome, also, reply)
    else:
        await _after(conn, outcome, None, reply)  # one statement: a transaction of its own
    return outcome


async def _after(
    conn: asyncpg.Connection,
    outcome: Outcome,
    also: AlsoInTransaction | None,
    reply: Reply | None,
) -> None:
    if also:
        await also(conn, outcome)
    answer = reply(outcome) if reply else None
    if answer is not None:
        await enqueue(conn, answer.topic, answer.event, answer.key)
