"""The per-appointment lock on a real PostgreSQL: held, it keeps others out (a try fails, a
batch waits); freed with the transaction or the pooled connection's release; two key spaces
never meet."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from visio_runtime.db import create_pool
from visio_runtime.locks import AppointmentLocks, lock_key

LOCKS = AppointmentLocks(space=0x7465)
OTHER_SERVICE = AppointmentLocks(space=0x7466)


@pytest.fixture
async def pool(fresh_database: str) -> AsyncIterator[asyncpg.Pool]:
    """The services' own pool, which does not reset a connection it takes back."""
    pool = await create_pool(fresh_database, "public", min_size=1, max_size=3)
    try:
        yield pool
    finally:
        await pool.close()


async def _try_elsewhere(
    pool: asyncpg.Pool, locks: AppointmentLocks, appointment: uuid.UUID
) -> bool:
    async with pool.acquire() as conn, conn.transaction():
        return await locks.try_hold(conn, appointment)


def test_the_key_is_a_stable_signed_32_bit_int() -> None:
    appointment = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert lock_key(appointment) == lock_key(uuid.UUID(str(appointment)))
    assert -(2**31) <= lock_key(appointment) < 2**31
    assert lock_key(appointment) != lock_key(uuid.uuid4())


async def test_a_held_lock_keeps_a_try_out_until_the_transaction_ends(pool: asyncpg.Pool) -> None:
    appointment, neighbour = uuid.uuid4(), uuid.uuid4()
    async with pool.acquire() as conn:
        async with conn.transaction():
            await LOCKS.hold(conn, appointment)
            assert not await _try_elsewhere(pool, LOCKS, appointment)
            assert await _try_elsewhere(pool, LOCKS, neighbour)
            assert await _try_elsewhere(pool, OTHER_SERVICE, appointment)
        assert await _try_elsewhere(pool, LOCKS, appointment)


async def test_a_session_lock_lasts_across_commits_and_goes_with_the_connection(
    pool: asyncpg.Pool,
) -> None:
    appointment = uuid.uuid4()
    async with LOCKS.session(pool, appointment) as conn:
        async with conn.transaction():
            await conn.execute("SELECT 1")
        assert not await _try_elsewhere(pool, LOCKS, appointment)
    assert await _try_elsewhere(pool, LOCKS, appointment)


async def test_the_pool_sends_no_reset_so_a_session_lets_its_own_lock_go(
    pool: asyncpg.Pool, fresh_database: str
) -> None:
    """The pool takes a connection back as it is (asyncpg's reset was a round trip on every
    release): a lock taken outside `session` stays with the connection, and a session lets its
    own go, also when its handling raises, before the next user of that very connection."""
    appointment = uuid.uuid4()
    single = await create_pool(fresh_database, "public", min_size=1, max_size=1)
    try:
        async with single.acquire() as conn:
            await conn.execute(
                "SELECT pg_advisory_lock($1::int, $2::int)", LOCKS.space, lock_key(appointment)
            )
        assert not await _try_elsewhere(pool, LOCKS, appointment)  # no reset freed it
        async with single.acquire() as conn:
            await conn.execute("SELECT pg_advisory_unlock_all()")
        assert await _try_elsewhere(pool, LOCKS, appointment)
        with pytest.raises(RuntimeError):
            async with LOCKS.session(single, appointment):
                assert not await _try_elsewhere(pool, LOCKS, appointment)
                raise RuntimeError("the handling failed")
        assert await _try_elsewhere(pool, LOCKS, appointment)
    finally:
        await single.close()


async def test_a_batch_waits_for_any_of_its_appointments(pool: asyncpg.Pool) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    async with pool.acquire() as holder:
        transaction = holder.transaction()
        await transaction.start()
        await LOCKS.hold(holder, second)

        async def batch() -> None:
            async with pool.acquire() as conn, conn.transaction():
                await LOCKS.hold_all(conn, [first, second, first])

        waiting = asyncio.create_task(batch())
        async with asyncio.timeout(30):  # until the batch waits for `second`
            while not await holder.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ):
                await asyncio.sleep(0.01)
        assert not waiting.done()
        await transaction.rollback()
        async with asyncio.timeout(30):
            await waiting
    assert await _try_elsewhere(pool, LOCKS, first)
