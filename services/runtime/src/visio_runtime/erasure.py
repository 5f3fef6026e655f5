"""What every service does the same way when a person's data is erased: remember the
appointment's id (and nothing else), so that no later event — a dead letter replayed, a consumer
group reset to the start of a topic, a partner's late correction — writes the person back; and
confirm, with an event whose id is derived from the erasure, so a repeated confirmation is the
same event (consumers skip it by id).

Each service's migrations create `erased_appointments` in its own schema (see
docs/personal-data.md); erasing is idempotent everywhere, so a redelivered
`PersonalDataErasureRequested` erases nothing new and confirms again.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg
from visio_shared import PersonalDataErased, PersonalDataErasureRequested
from visio_shared.events import ErasingService

# What an erased text column holds where the column cannot be NULL: says what happened, holds
# nothing of the person.
ERASED = "[effacé]"

_CONFIRMATION_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:visio-rdv:erasure:confirmed")


async def remember_erased(
    conn: asyncpg.Connection, appointment_id: uuid.UUID, erasure_id: uuid.UUID
) -> bool:
    """Remember, in the caller's transaction, that the appointment's person was erased; False if
    it already was."""
    status: str = await conn.execute(
        "INSERT INTO erased_appointments (appointment_id, erasure_id) VALUES ($1, $2) "
        "ON CONFLICT (appointment_id) DO NOTHING",
        appointment_id,
        erasure_id,
    )
    return status.endswith(" 1")


async def is_erased(conn: asyncpg.Connection, appointment_id: uuid.UUID) -> bool:
    """True if the appointment's person was erased: its events must write nothing personal."""
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM erased_appointments WHERE appointment_id = $1)",
        appointment_id,
    )
    return found


async def erased_among(
    conn: asyncpg.Connection, appointment_ids: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    """`is_erased` for a batch's appointments, in one query: those whose person was erased."""
    if not appointment_ids:
        return set()
    rows = await conn.fetch(
        "SELECT appointment_id FROM erased_appointments WHERE appointment_id = ANY($1::uuid[])",
        list(set(appointment_ids)),
    )
    return {row["appointment_id"] for row in rows}


def confirmation(
    event: PersonalDataErasureRequested, service: ErasingService
) -> PersonalDataErased:
    """The service's `PersonalDataErased` for one appointment of an erasure, always the same."""
    return PersonalDataErased(
        **event.caused(appointment_id=event.appointment_id, revision=event.revision),
        event_id=uuid.uuid5(
            _CONFIRMATION_NAMESPACE, f"{event.erasure_id}/{event.appointment_id}/{service}"
        ),
        erasure_id=event.erasure_id,
        service=service,
    )
