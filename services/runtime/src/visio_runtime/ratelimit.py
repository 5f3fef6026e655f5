"""Fixed-window rate limits kept in the service's own PostgreSQL schema, so every replica counts
the same attempts. A bucket names what is limited (a link's fingerprint, an address's keyed
hash), never the personal datum itself.

Each service that limits adds this table to its migrations (and grants it to its role):

    CREATE TABLE rate_limits (
        bucket        text NOT NULL,
        window_start  timestamptz NOT NULL,
        hits          int NOT NULL,
        PRIMARY KEY (bucket, window_start)
    );
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg


@dataclass(frozen=True)
class Limit:
    """At most `hits` attempts per `window_s` seconds."""

    hits: int
    window_s: int


async def allow(
    db: asyncpg.Pool | asyncpg.Connection,
    bucket: str,
    limit: Limit,
    now: datetime | None = None,
) -> bool:
    """Count one attempt in `bucket`; False when it is over the limit (the attempt still counts,
    so hammering does not open the next slot sooner)."""
    moment = now or datetime.now(UTC)
    epoch = int(moment.timestamp())
    window_start = datetime.fromtimestamp(epoch - epoch % limit.window_s, UTC)
    hits: int = await db.fetchval(
        """
        INSERT INTO rate_limits (bucket, window_start, hits) VALUES ($1, $2, 1)
        ON CONFLICT (bucket, window_start) DO UPDATE SET hits = rate_limits.hits + 1
        RETURNING hits
        """,
        bucket,
        window_start,
    )
    return hits <= limit.hits


async def purge(db: asyncpg.Pool | asyncpg.Connection, older_than: timedelta) -> int:
    """Forget windows that ended long ago; returns how many rows went."""
    result: str = await db.execute(
        "DELETE FROM rate_limits WHERE window_start < $1", datetime.now(UTC) - older_than
    )
    return int(result.rsplit(" ", 1)[-1])
