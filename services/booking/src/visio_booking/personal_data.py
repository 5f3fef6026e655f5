"""Booking's part of a person's data, for the export consent assembles: each appointment as
booked and as it stands (name, address, mobile and whether texts were chosen, device, Caf,
advisor, time, subject, status) and its history — every step and change, with its time and what
it came from."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from visio_runtime.personal_data import rows

_APPOINTMENTS = """
SELECT appointment_id, status, caf_code, advisor_name, start_at, duration_minutes, timezone,
       subject, first_name, last_name, email, device, mobile, sms_opt_in, cgu_version,
       cgu_accepted_at,
       recording_authorised, calling_system, created_at, updated_at, cancelled_at, erased_at
FROM appointments WHERE appointment_id = ANY($1::uuid[]) ORDER BY created_at
"""
_CORRECTIONS = """
SELECT appointment_id, first_name, last_name, email, requested_at, expires_at, confirmed_at
FROM contact_corrections WHERE appointment_id = ANY($1::uuid[]) ORDER BY requested_at
"""
_HISTORY = """
SELECT appointment_id, status AS step, revision, at, detail
FROM appointment_history WHERE appointment_id = ANY($1::uuid[]) ORDER BY id
"""


async def collect(conn: asyncpg.Connection, appointment_ids: list[uuid.UUID]) -> dict[str, Any]:
    return {
        "appointments": rows(await conn.fetch(_APPOINTMENTS, appointment_ids)),
        "history": rows(await conn.fetch(_HISTORY, appointment_ids)),
        # The corrections the person asked from their page, confirmed or waiting to be.
        "contact_corrections": rows(await conn.fetch(_CORRECTIONS, appointment_ids)),
    }
