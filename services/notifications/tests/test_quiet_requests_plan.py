"""`store.nothing_to_tell` on tables that grew after its plan was made.

asyncpg keeps each statement prepared, and PostgreSQL may cache a generic plan for it after a
few calls — made while the tables were nearly empty in a new database, when a backlog starts.
Written as anti-joins, such a plan read the whole `dispatches` table again for every
appointment of a batch: 70,000 pages a call in the backlog bench, a third of PostgreSQL's
time. Written with EXCEPT, each table is read at most once per batch, whatever the plan."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
from visio_notifications import store
from visio_runtime.db import create_pool

# The statement as it was, kept to show that the measure below tells the two apart.
ANTI_JOINS = """
    SELECT a.appointment_id FROM appointments a
    WHERE a.appointment_id = ANY($1::uuid[]) AND a.cancellation IS NULL
      AND NOT EXISTS (SELECT 1 FROM meetings m WHERE m.appointment_id = a.appointment_id)
      AND NOT EXISTS (SELECT 1 FROM link_requests l
                      WHERE l.appointment_id = a.appointment_id AND l.outcome IS NULL)
      AND NOT EXISTS (SELECT 1 FROM dispatches d WHERE d.appointment_id = a.appointment_id)
      AND NOT EXISTS (SELECT 1 FROM sms_messages t WHERE t.appointment_id = a.appointment_id)
"""


async def _pages_read(conn: asyncpg.Connection, name: str, ids: list[uuid.UUID]) -> int:
    """Shared buffers the prepared statement `name` touched for `ids`, with its cached plan."""
    literal = "{" + ",".join(map(str, ids)) + "}"
    explained = await conn.fetchval(
        f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE {name}('{literal}'::uuid[])"
    )
    plan = json.loads(explained)[0]["Plan"]
    pages: int = plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]
    return pages


async def test_a_plan_cached_on_empty_tables_reads_each_table_once_per_batch_not_per_row(
    clone_database: Callable[[], contextlib.AbstractAsyncContextManager[str]], make: Any
) -> None:
    async with clone_database() as url:
        pool = await create_pool(url, "notifications", min_size=1, max_size=1)
        try:
            async with pool.acquire() as conn:
                # Plans made now, on empty tables, and kept for every later call.
                await conn.execute("SET plan_cache_mode = force_generic_plan")
                await conn.execute(f"PREPARE quiet(uuid[]) AS {store.NOTHING_TO_TELL}")
                await conn.execute(f"PREPARE anti(uuid[]) AS {ANTI_JOINS}")
                for name in ("quiet", "anti"):
                    await conn.execute(f"EXECUTE {name}('{{}}'::uuid[])")
                # Then the tables fill: a batch of 200 new requests beside 6,000 emails sent.
                requests = [make.appointment() for _ in range(200)]
                await store.save_requested_many(conn, requests)
                await conn.execute(
                    "INSERT INTO dispatches (appointment_id, revision, kind, message_id, "
                    "recipient_sha256, status, event) "
                    "SELECT gen_random_uuid(), 1, 'confirmation', 'm' || n, 'h', 'sent', '{}' "
                    "FROM generate_series(1, 6000) AS n"
                )
                ids = [event.appointment_id for event in requests]
                assert await store.nothing_to_tell(conn, ids) == set(ids)
                quiet = await _pages_read(conn, "quiet", ids)
                anti = await _pages_read(conn, "anti", ids)
        finally:
            await pool.close()
    # One scan of `dispatches` (6,000 rows, ~150 pages) and the batch's own rows: ~1,100.
    assert quiet < 2_500, quiet
    # The anti-joins read `dispatches` again for each of the 200 appointments: ~17,000.
    assert anti > 5 * quiet, (anti, quiet)
