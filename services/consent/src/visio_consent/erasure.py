"""Consent's part of an erasure: the person's name and address kept beside the chain go; the
chain keeps its pseudonymous proof (nothing in it is a name or an address, and removing a record
would break every hash after it), and records the erasure itself — a `personal_data_erased`
record under the same subject_ref, announced by a `ConsentRecorded` like every record, so the
proof file says when the details were erased and why they are no longer shown. The id is
remembered, so a replayed `AppointmentRequested` keeps no details again. Then
`PersonalDataErased`."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from visio_runtime.db import mark_processed
from visio_runtime.erasure import confirmation, remember_erased
from visio_shared import PersonalDataErasureRequested, Topics, publish_event
from visio_shared.publishing import Publisher

from visio_consent import store
from visio_consent.handlers import announcement
from visio_consent.ledger import append, iso_utc

log = logging.getLogger(__name__)


async def erase_subject(
    event: PersonalDataErasureRequested, pool: asyncpg.Pool, publisher: Publisher, topics: Topics
) -> None:
    """Idempotent: a redelivery appends nothing and confirms again (the same event id)."""
    async with pool.acquire() as conn, conn.transaction():
        appointment = await store.lock_appointment(conn, event.appointment_id)
        await conn.execute("DELETE FROM subjects WHERE appointment_id = $1", event.appointment_id)
        first = await remember_erased(conn, event.appointment_id, event.erasure_id)
        if await mark_processed(conn, event.event_id, event.event_type) and first:
            if appointment is not None:
                await append(conn, [_erased_record(event, appointment)])
        # Announced like every record (again on a redelivery: the same event), so a restored
        # ledger can get it back from the topic (visio_consent.rebuild).
        recorded = await announcement(conn, event)
    if recorded is not None:
        await publish_event(publisher, topics.consents, recorded)
    await publish_event(publisher, topics.consents, confirmation(event, "consent"))
    log.info(
        "consent: personal data of appointment %s erased (erasure %s); the ledger keeps its "
        "pseudonymous records",
        event.appointment_id,
        event.erasure_id,
        extra={"correlation_id": str(event.correlation_id)},
    )


def _erased_record(
    event: PersonalDataErasureRequested, appointment: store.Appointment
) -> dict[str, Any]:
    return {
        "kind": "personal_data_erased",
        "subject_ref": appointment.subject_ref,
        "appointment_id": str(event.appointment_id),
        "revision": event.revision,
        "cgu_version": appointment.cgu_version,  # as every record of the appointment says
        "source_event_id": str(event.event_id),
        "erasure_id": str(event.erasure_id),
        "erased_at": iso_utc(event.occurred_at),
    }
