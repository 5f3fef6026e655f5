"""Meetings' part of an erasure: the advisor's calendar event loses its subject and body (what
the partner wrote may name the person; the slot, the reference and the Teams meeting stay), the
events held for the appointment go, the meeting row keeps no subject, and the id is remembered
so a replayed `AppointmentRequested` makes no meeting again. Then `PersonalDataErased`."""

from __future__ import annotations

import logging

import asyncpg
from visio_runtime.erasure import confirmation, remember_erased
from visio_shared import PersonalDataErasureRequested
from visio_shared.publishing import Publisher, publish_event
from visio_shared.topics import Topics

from visio_meetings import store
from visio_meetings.graph import GraphClient

log = logging.getLogger(__name__)


async def erase(
    conn: asyncpg.Connection,
    graph: GraphClient,
    publisher: Publisher,
    topics: Topics,
    event: PersonalDataErasureRequested,
) -> None:
    """Idempotent: a redelivery empties the event again (harmless) and confirms again (the same
    event id). A Graph refusal other than 404 propagates: retried, then dead-lettered."""
    meeting = await store.get_meeting(conn, event.appointment_id)
    if meeting is not None and meeting.graph_event_id is not None:
        found = await graph.erase_event_details(
            meeting.advisor_id, meeting.graph_event_id, event.appointment_id
        )
        if not found:
            log.info("meetings: erasure: the calendar event was gone already")
    async with store.completing(conn, event):
        await remember_erased(conn, event.appointment_id, event.erasure_id)
        await conn.execute(
            "DELETE FROM pending_events WHERE appointment_id = $1", event.appointment_id
        )
        await conn.execute(
            "UPDATE meetings SET subject = NULL, updated_at = now() WHERE appointment_id = $1",
            event.appointment_id,
        )
    await publish_event(publisher, topics.meetings, confirmation(event, "meetings"))
    log.info(
        "meetings: personal data of appointment %s erased (erasure %s)",
        event.appointment_id,
        event.erasure_id,
        extra={"correlation_id": str(event.correlation_id)},
    )
