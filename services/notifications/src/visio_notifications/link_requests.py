"""The person's requests for the email again (AppointmentLinkRequested, from booking's pages):
one row per request, pending until it is answered — by a `link_resent` email (its dispatch
names the request) or by the reason none was sent. No personal data: ids, the reason given,
and what became of it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
from visio_runtime.db import mark_processed
from visio_runtime.erasure import is_erased
from visio_shared import AppointmentEvent, AppointmentLinkRequested

from visio_notifications.decide import LinkRequest


async def done_or_erased(conn: asyncpg.Connection, event: AppointmentEvent) -> bool:
    """For a request answered once, outside the appointment's state (a new address to confirm,
    a move to pass on to the Caf's team): True if it was handled already, or if its person was
    erased — then it is marked processed, and nothing is sent."""
    done = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM processed_events WHERE event_id = $1)", event.event_id
    )
    if done or await is_erased(conn, event.appointment_id):
        await mark_processed(conn, event.event_id, event.event_type)
        return True
    return False


async def save(conn: asyncpg.Connection, event: AppointmentLinkRequested) -> None:
    await conn.execute(
        """
        INSERT INTO link_requests (event_id, appointment_id, revision, reason, requested_at)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (event_id) DO NOTHING
        """,
        event.event_id,
        event.appointment_id,
        event.revision,
        event.reason,
        event.occurred_at,
    )


# The pending requests of one appointment (`wanted.appointment_id`), oldest first, as an array
# of rows in `LinkRequest`'s order of fields: a column of `store.load_states`' one statement.
PENDING = """
    ARRAY(SELECT ROW(l.event_id, l.reason, l.requested_at) FROM link_requests l
          WHERE l.appointment_id = wanted.appointment_id AND l.outcome IS NULL
          ORDER BY l.requested_at, l.event_id)
"""


def request_of(row: Sequence[Any]) -> LinkRequest:
    return LinkRequest(*row)


async def close(
    conn: asyncpg.Connection, event_ids: list[uuid.UUID], outcome: str, now: datetime
) -> None:
    """Answered: 'sent' or 'failed' (the dispatch says more), or why no email was sent."""
    await conn.execute(
        "UPDATE link_requests SET outcome = $2, decided_at = $3 "
        "WHERE event_id = ANY($1::uuid[]) AND outcome IS NULL",
        event_ids,
        outcome,
        now,
    )
