"""One way for a service to remove its own personal data past its retention period: rules, each
a DELETE of one table with its cutoff, run in one transaction over the service's schema.

Each service lists its rules in its public `retention` module and exposes `purge_expired`; `ops
purge` (deploy) asks each of them in turn rather than deleting rows in their tables itself.
What is removed, and for how long each thing is kept, is docs/personal-data.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import asyncpg

Period = Literal["appointment", "outbox"]


@dataclass(frozen=True)
class Rule:
    table: str  # schema.table
    period: Period  # which retention period applies (its length in days is the caller's)
    delete: str  # $1: the cutoff (rows older than it go)


async def purge(
    conn: asyncpg.Connection,
    rules: Sequence[Rule],
    days: Mapping[Period, float],
    now: datetime,
    dry_run: bool = False,
) -> dict[str, int]:
    """Rows removed per table, in one transaction (rolled back on `dry_run`); a table not there
    yet (a schema not migrated) is skipped."""
    removed: dict[str, int] = {}
    transaction = conn.transaction()
    await transaction.start()
    try:
        for rule in rules:
            if await conn.fetchval("SELECT to_regclass($1)", rule.table) is None:
                continue
            status = await conn.execute(rule.delete, now - timedelta(days=days[rule.period]))
            removed[rule.table] = int(status.split()[-1])
    except BaseException:
        await transaction.rollback()
        raise
    await (transaction.rollback() if dry_run else transaction.commit())
    return removed
