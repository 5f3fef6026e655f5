"""`visio-rdv ops erasure request` and `ops erasure status`: a Caf operator erases a person's
data in every service, and sees which services have confirmed. The same functions as booking's
`POST /v1/erasures`, on the owner connection (`VISIO_DATABASE_URL`), in booking's schema: the
request is booking's, which publishes it through its outbox."""

from __future__ import annotations

import uuid

import asyncpg
from visio_booking.erasure import Erasure, ErasureStatus, erasure_status, request_erasure
from visio_shared import Topics

from visio_deploy.ops.settings import OpsSettings


async def _connect(settings: OpsSettings) -> asyncpg.Connection:
    conn: asyncpg.Connection = await asyncpg.connect(
        settings.database_url.get_secret_value(), server_settings={"search_path": "booking"}
    )
    return conn


async def request(
    settings: OpsSettings,
    *,
    reason: str,
    operator: str,
    email: str | None,
    appointment_id: uuid.UUID | None,
) -> Erasure:
    conn = await _connect(settings)
    try:
        return await request_erasure(
            conn,
            Topics(settings.topic_prefix),
            reason=reason,
            requested_by=f"ops:{operator}",
            email=email,
            appointment_id=appointment_id,
        )
    finally:
        await conn.close()


async def status(settings: OpsSettings, erasure_id: uuid.UUID) -> ErasureStatus | None:
    conn = await _connect(settings)
    try:
        return await erasure_status(conn, erasure_id)
    finally:
        await conn.close()


def describe(found: ErasureStatus) -> list[str]:
    """The status as lines: who has confirmed, who has not, per appointment."""
    lines = [
        f"erasure {found.erasure_id}: "
        + ("complete" if found.complete else f"waiting for {', '.join(found.waiting_for)}"),
        f"asked by {found.requested_by} on {found.requested_at.isoformat(timespec='seconds')}: "
        f"{found.reason}",
    ]
    for appointment_id, services in found.confirmations.items():
        done = ", ".join(
            f"{service} {'✓ ' + at.isoformat(timespec='seconds') if at else '— not yet'}"
            for service, at in services.items()
        )
        lines.append(f"  appointment {appointment_id}: {done}")
    return lines
