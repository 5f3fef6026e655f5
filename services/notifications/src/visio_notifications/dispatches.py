"""The dispatch log: one row per email decided (sent, or failed for good), with what it told
the person, and the NotificationSent / NotificationFailed to publish (a small outbox:
`published_at` stays null until Kafka has it). No address is kept, only its SHA-256.

One row per key: (appointment, kind, revision, reminder offset), plus, for `link_resent`, the
request it answers: a person may ask for the email again twice at the same revision, and each
request gets its email once.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from visio_shared import Envelope

from visio_notifications.decide import Told


def bounce_tag(message_id: str) -> str:
    """16 characters naming one dispatch in its bounce address (`bounces`): its Message-ID is
    the dispatch's key. Lower-case base32, since some servers lower-case the address a DSN
    goes back to."""
    digest = hashlib.sha256(message_id.encode()).digest()[:10]
    return base64.b32encode(digest).decode().lower()


def return_path(domain: str | None, message_id: str) -> str | None:
    """An email's envelope sender, where its DSN goes back to: `bounce+<tag>@<domain>` (VERP),
    or None when no bounce domain is set."""
    return None if domain is None else f"bounce+{bounce_tag(message_id)}@{domain}"


@dataclass(frozen=True)
class Dispatch:
    """One email decided, with the event that says so."""

    appointment_id: uuid.UUID
    message_id: str
    told: Told
    event: Envelope
    reason: str | None = None
    detail: str = ""
    smtp_code: int | None = None
    sent_at: datetime | None = None


async def record(conn: asyncpg.Connection, dispatch: Dispatch) -> None:
    await record_many(conn, [dispatch])


async def record_many(conn: asyncpg.Connection, decided: Sequence[Dispatch]) -> None:
    """Log these emails, in one round trip (asyncpg pipelines `executemany`)."""
    if not decided:
        return
    await conn.executemany(_RECORD, [_row(dispatch) for dispatch in decided])


_RECORD = """
    INSERT INTO dispatches (appointment_id, revision, kind, reminder_offset_minutes,
                            message_id, recipient_sha256, status, reason, detail, smtp_code,
                            sent_at, device, start_at, duration_minutes, join_url, event,
                            request_id, bounce_tag)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16::jsonb,
            $17, $18)
"""


def _row(dispatch: Dispatch) -> tuple[Any, ...]:
    told = dispatch.told
    return (
        dispatch.appointment_id,
        told.revision,
        told.kind,
        told.reminder_offset_minutes,
        dispatch.message_id,
        told.recipient_sha256,
        told.status,
        dispatch.reason,
        dispatch.detail,
        dispatch.smtp_code,
        dispatch.sent_at,
        told.device,
        told.start_at,
        told.duration_minutes,
        told.join_url,
        dispatch.event.model_dump_json(),
        told.request_id,
        bounce_tag(dispatch.message_id),
    )


# The dispatch log of one appointment (`wanted.appointment_id`), oldest first, as an array of
# rows in `Told`'s own order of fields: a column of `store.load_states`' one statement
# (`told_of` reads a row).
HISTORY = """
    ARRAY(SELECT ROW(d.kind, d.revision, d.status, d.recipient_sha256,
                     d.reminder_offset_minutes, d.device, d.start_at, d.duration_minutes,
                     d.join_url, d.request_id)
          FROM dispatches d WHERE d.appointment_id = wanted.appointment_id ORDER BY d.id)
"""


def told_of(row: Sequence[Any]) -> Told:
    return Told(*row)


async def claim_unpublished(
    conn: asyncpg.Connection, appointment_id: uuid.UUID | None = None
) -> tuple[int, str] | None:
    """(dispatch id, event JSON) of the oldest outcome Kafka does not have yet, locked until the
    caller's transaction ends; one another transaction holds is skipped, never sent twice."""
    row = await conn.fetchrow(
        """
        SELECT id, event::text AS event FROM dispatches
        WHERE published_at IS NULL AND ($1::uuid IS NULL OR appointment_id = $1)
        ORDER BY id
        LIMIT 1
        FOR UPDATE SKIP LOCKED
        """,
        appointment_id,
    )
    return None if row is None else (row["id"], row["event"])


async def mark_published(conn: asyncpg.Connection, dispatch_id: int) -> None:
    await conn.execute("UPDATE dispatches SET published_at = now() WHERE id = $1", dispatch_id)


async def claim_unpublished_of(
    conn: asyncpg.Connection, appointment_ids: list[uuid.UUID]
) -> list[tuple[int, str]]:
    """`claim_unpublished` for every outcome of these appointments at once, in their order."""
    rows = await conn.fetch(
        """
        SELECT id, event::text AS event FROM dispatches
        WHERE published_at IS NULL AND appointment_id = ANY($1::uuid[])
        ORDER BY id
        FOR UPDATE SKIP LOCKED
        """,
        appointment_ids,
    )
    return [(row["id"], row["event"]) for row in rows]


async def mark_all_published(conn: asyncpg.Connection, dispatch_ids: list[int]) -> None:
    await conn.execute(
        "UPDATE dispatches SET published_at = now() WHERE id = ANY($1::bigint[])", dispatch_ids
    )
