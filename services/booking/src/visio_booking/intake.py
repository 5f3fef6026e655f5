"""One way in for every request, HTTP or Kafka: the idempotency key, the change and its outbox
rows (and, for Kafka, the reply) commit together or not at all."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg

from visio_booking import idempotency
from visio_booking.appointments import HANDLERS, Caller, Command, Context
from visio_booking.idempotency import Outcome

# Run inside the request's transaction once its outcome is known (Kafka enqueues its reply).
AlsoInTransaction = Callable[[asyncpg.Connection, Outcome], Awaitable[None]]


async def execute(
    pool: asyncpg.Pool,
    ctx: Context,
    caller: Caller,
    command: Command,
    also: AlsoInTransaction | None = None,
) -> Outcome:
    """Carry out one request exactly once per idempotency key; refusals raise."""
    handler = HANDLERS[command.request_type]
    key = command.idempotency_key
    key_field = "request_id" if caller.channel == "kafka" else "Idempotency-Key"
    print_ = idempotency.fingerprint(command.request_type, command.appointment_id, command.payload)
    async with pool.acquire() as conn:
        # A repeat is answered before anything is validated again: the first answer stands
        # even if the request would no longer pass (its start has come closer, say).
        if key and (stored := await idempotency.lookup(conn, caller.name, key, print_, key_field)):
            return await _answer(conn, stored, also)
        async with conn.transaction():
            if key:
                twin = await idempotency.claim(
                    conn, caller.name, key, print_, command.request_type, key_field
                )
                if twin is not None:
                    if also:
                        await also(conn, twin)
                    return twin
            outcome = await handler(conn, ctx, caller, command)
            if key:
                await idempotency.remember(conn, caller.name, key, outcome)
            if also:
                await also(conn, outcome)
    return outcome


async def _answer(
    conn: asyncpg.Connection, outcome: Outcome, also: AlsoInTransaction | None
) -> Outcome:
    if also:
        async with conn.transaction():
            await also(conn, outcome)
    return outcome
