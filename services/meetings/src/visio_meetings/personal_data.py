"""Meetings' part of a person's data, for the export consent assembles: the Teams meeting of
each appointment (whose calendar, when, its link, whether recording was allowed, the first
name, last-name initial and device its calendar event shows the advisor) and whether
its attendance was recorded (the record itself is in consent's ledger)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from visio_runtime.personal_data import rows

_MEETINGS = """
SELECT appointment_id, status, advisor_id, start_at, duration_minutes, timezone, join_url,
       recording_authorised, first_name, last_initial, device, failure_reason,
       attendance_outcome, attendance_done_at, created_at, updated_at
FROM meetings WHERE appointment_id = ANY($1::uuid[]) ORDER BY created_at
"""


async def collect(conn: asyncpg.Connection, appointment_ids: list[uuid.UUID]) -> dict[str, Any]:
    return {"meetings": rows(await conn.fetch(_MEETINGS, appointment_ids))}
