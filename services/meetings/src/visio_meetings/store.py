"""The meetings schema: one row per appointment's meeting, and the events already handled."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from visio_runtime.db import SchemaSpec

SCHEMA = SchemaSpec(schema="meetings", sql_dir=Path(__file__).parent / "migrations")


@dataclass(frozen=True)
class Meeting:
    appointment_id: uuid.UUID
    revision: int
    advisor_id: str
    transaction_id: str
    graph_event_id: str | None
    online_meeting_id: str | None
    join_url: str | None
    status: str
    failure_reason: str | None


async def is_processed(conn: asyncpg.Connection | asyncpg.Pool, event_id: uuid.UUID) -> bool:
    found = await conn.fetchval("SELECT 1 FROM processed_events WHERE event_id = $1", event_id)
    return found is not None


async def get_meeting(
    conn: asyncpg.Connection | asyncpg.Pool, appointment_id: uuid.UUID
) -> Meeting | None:
    row = await conn.fetchrow(
        "SELECT appointment_id, revision, advisor_id, transaction_id, graph_event_id, "
        "online_meeting_id, join_url, status, failure_reason "
        "FROM meetings WHERE appointment_id = $1",
        appointment_id,
    )
    return Meeting(**dict(row)) if row is not None else None


async def save_ready(conn: asyncpg.Connection, meeting: Meeting) -> None:
    await conn.execute(
        "INSERT INTO meetings (appointment_id, revision, advisor_id, transaction_id, "
        "graph_event_id, online_meeting_id, join_url, status, failure_reason) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, 'ready', NULL) "
        "ON CONFLICT (appointment_id) DO UPDATE SET revision = EXCLUDED.revision, "
        "advisor_id = EXCLUDED.advisor_id, transaction_id = EXCLUDED.transaction_id, "
        "graph_event_id = EXCLUDED.graph_event_id, "
        "online_meeting_id = EXCLUDED.online_meeting_id, join_url = EXCLUDED.join_url, "
        "status = 'ready', failure_reason = NULL, updated_at = now()",
        meeting.appointment_id,
        meeting.revision,
        meeting.advisor_id,
        meeting.transaction_id,
        meeting.graph_event_id,
        meeting.online_meeting_id,
        meeting.join_url,
    )


async def save_failed(
    conn: asyncpg.Connection,
    *,
    appointment_id: uuid.UUID,
    revision: int,
    advisor_id: str,
    transaction_id: str,
    reason: str,
) -> None:
    # A meeting already ready stays ready: a late failure of a duplicate must not undo it.
    await conn.execute(
        "INSERT INTO meetings (appointment_id, revision, advisor_id, transaction_id, status, "
        "failure_reason) VALUES ($1, $2, $3, $4, 'failed', $5) "
        "ON CONFLICT (appointment_id) DO UPDATE SET revision = EXCLUDED.revision, "
        "advisor_id = EXCLUDED.advisor_id, status = 'failed', "
        "failure_reason = EXCLUDED.failure_reason, updated_at = now() "
        "WHERE meetings.status <> 'ready'",
        appointment_id,
        revision,
        advisor_id,
        transaction_id,
        reason,
    )
