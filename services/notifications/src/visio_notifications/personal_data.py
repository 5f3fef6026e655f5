"""Notifications' part of a person's data, for the export consent assembles: every email sent
(or that could not be), when, which kind, how it ended; the reminders planned; the requests
for the email again. The emails' text is not kept here: only what each said (kind, time)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from visio_runtime.personal_data import rows

_EMAILS = """
SELECT appointment_id, kind, revision, status, reason, sent_at, recorded_at,
       reminder_offset_minutes, message_id
FROM dispatches WHERE appointment_id = ANY($1::uuid[]) ORDER BY recorded_at, id
"""
_TEXTS = """
SELECT appointment_id, kind, revision, status, sent_at, delivery, delivery_at,
       reminder_offset_minutes, recorded_at
FROM sms_messages WHERE appointment_id = ANY($1::uuid[]) ORDER BY recorded_at, id
"""
_REMINDERS = """
SELECT appointment_id, offset_minutes, due_at, status
FROM reminders WHERE appointment_id = ANY($1::uuid[]) ORDER BY due_at
"""
_REQUESTS = """
SELECT appointment_id, reason, requested_at, outcome, decided_at
FROM link_requests WHERE appointment_id = ANY($1::uuid[]) ORDER BY requested_at
"""


async def collect(conn: asyncpg.Connection, appointment_ids: list[uuid.UUID]) -> dict[str, Any]:
    return {
        "emails": rows(await conn.fetch(_EMAILS, appointment_ids)),
        "texts": rows(await conn.fetch(_TEXTS, appointment_ids)),
        "reminders": rows(await conn.fetch(_REMINDERS, appointment_ids)),
        "link_requests": rows(await conn.fetch(_REQUESTS, appointment_ids)),
    }
