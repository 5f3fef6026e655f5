"""Each service's answer for its own part of a person's data (the right of access): a route of
its admin port, `POST /internal/personal-data` with `{"appointment_ids": [...]}`, answering what
the service holds for those appointments as JSON. Consent assembles the export from every
service's answer (`visio_consent.export`).

Through HTTP, not Kafka: an export put on a topic would copy the person's data where an erasure
cannot reach it. On the admin port, which stays on the internal network like `/metrics`; the ids
asked for are those of the person whose signed link or operator's request consent checked.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field

PATH = "/internal/personal-data"
MAX_APPOINTMENTS = 500

# What a service holds for some appointments, as JSON-ready values.
Collect = Callable[[asyncpg.Connection, list[uuid.UUID]], Awaitable[dict[str, Any]]]


class PersonalDataRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    appointment_ids: list[uuid.UUID] = Field(max_length=MAX_APPOINTMENTS)


def rows(records: list[asyncpg.Record]) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts (times as ISO 8601, ids as strings)."""
    return [{key: _plain(value) for key, value in record.items()} for record in records]


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def add_route(admin: FastAPI, pool: Callable[[], asyncpg.Pool], collect: Collect) -> None:
    @admin.post(PATH, include_in_schema=False)
    async def personal_data(request: Request) -> dict[str, Any]:
        wanted = PersonalDataRequest.model_validate_json(await request.body())
        async with pool().acquire() as conn:
            return await collect(conn, wanted.appointment_ids)
