"""The per-appointment lock, one copy for every service that serialises what it does for one
appointment (its events come from more than one topic, and a poller works on it too).

PostgreSQL advisory locks with two int keys: the service's own key space (so services sharing a
database, and the migrations' single-bigint locks, never meet) and 32 bits of a BLAKE2b digest
of the appointment id. Four ways to take one:

- `session(pool, id)`: a connection holding the lock for a handling that commits more than once;
  freed as the handling ends, however it ends (`release_session_locks`: the pool does not reset
  its connections, see `visio_runtime.db.create_pool`);
- `hold(conn, id)`: until the transaction ends;
- `hold_all(conn, ids)`: the same for a batch, in one statement, in one order (of their keys)
  whoever takes them, so that two batches never wait for each other in a cycle;
- `try_hold(conn, id)`: until the transaction ends if nobody holds it now — a poller's way in,
  which already holds a row lock and so must never wait.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg


async def release_session_locks(conn: asyncpg.Connection) -> None:
    """Let go of every session lock this connection holds, before it goes back to the pool (which
    no longer resets it). If that cannot be done — the connection broke, or the wait for the
    answer was cancelled — the connection is closed instead: the server frees a closed
    session's locks, and a connection whose locks are unknown is never handed to anyone."""
    try:
        await conn.execute("SELECT pg_advisory_unlock_all()")
    except BaseException:
        conn.terminate()
        raise


def lock_key(appointment_id: uuid.UUID) -> int:
    """The appointment's half of the key: a signed 32-bit int."""
    digest = hashlib.blake2b(appointment_id.bytes, digest_size=4).digest()
    return int.from_bytes(digest, signed=True)


@dataclass(frozen=True)
class AppointmentLocks:
    space: int  # the service's key space: a signed 32-bit int of its own

    @asynccontextmanager
    async def session(
        self, pool: asyncpg.Pool, appointment_id: uuid.UUID
    ) -> AsyncIterator[asyncpg.Connection]:
        """A connection holding the appointment's lock; all of the handling's SQL goes through
        it. A session lock, not a transaction's: the handling may commit more than once."""
        async with pool.acquire() as conn:
            try:
                await conn.execute(
                    "SELECT pg_advisory_lock($1::int, $2::int)",
                    self.space,
                    lock_key(appointment_id),
                )
                yield conn
            finally:
                await release_session_locks(conn)

    async def hold(self, conn: asyncpg.Connection, appointment_id: uuid.UUID) -> None:
        """The appointment's lock until the transaction ends (waits for it)."""
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1::int, $2::int)", self.space, lock_key(appointment_id)
        )

    async def hold_all(
        self, conn: asyncpg.Connection, appointment_ids: Iterable[uuid.UUID]
    ) -> None:
        """`hold` for a batch, in one statement, taken in the order of their keys."""
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1::int, key) FROM ("
            "SELECT DISTINCT key FROM unnest($2::int[]) AS key ORDER BY key) AS keys",
            self.space,
            [lock_key(appointment_id) for appointment_id in appointment_ids],
        )

    async def try_hold(self, conn: asyncpg.Connection, appointment_id: uuid.UUID) -> bool:
        """The appointment's lock until the transaction ends, if nobody holds it now."""
        locked: bool = await conn.fetchval(
            "SELECT pg_try_advisory_xact_lock($1::int, $2::int)",
            self.space,
            lock_key(appointment_id),
        )
        return locked
