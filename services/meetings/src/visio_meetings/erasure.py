"""Meetings' part of an erasure: the advisor's calendar event loses its subject and who was
coming (what the partner wrote may name the person; the first name and initial do; the slot,
the recording choice, the link to the advisor's page, the reference and the Teams meeting
stay), the events held for the appointment go, the meeting row keeps no subject, first name,
initial or device, and the id is remembered so a replayed `AppointmentRequested` makes no
meeting again. Then `PersonalDataErased`."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

import asyncpg
from visio_runtime.erasure import confirmation, remember_erased
from visio_shared import PersonalDataErasureRequested
from visio_shared.publishing import publish_event

from visio_meetings import store
from visio_meetings.calls import ERASED_SUBJECT
from visio_meetings.event_updates import rewrite_note

if TYPE_CHECKING:
    from visio_meetings.handlers import MeetingsDeps

log = logging.getLogger(__name__)


async def erase(
    conn: asyncpg.Connection, deps: MeetingsDeps, event: PersonalDataErasureRequested
) -> None:
    """Idempotent: a redelivery empties the event again (harmless) and confirms again (the same
    event id). A Graph refusal other than 404 propagates: retried, then dead-lettered."""
    meeting = await store.get_meeting(conn, event.appointment_id)
    if meeting is not None and meeting.graph_event_id is not None:
        erased = replace(meeting, subject=ERASED_SUBJECT, first_name=None, device=None)
        found = await rewrite_note(
            deps.graph,
            meeting.advisor_id,
            meeting.graph_event_id,
            deps.note(erased),
            subject=ERASED_SUBJECT,
        )
        if not found:
            log.info("meetings: erasure: the calendar event was gone already")
    async with store.completing(conn, event):
        await remember_erased(conn, event.appointment_id, event.erasure_id)
        await conn.execute(
            "DELETE FROM pending_events WHERE appointment_id = $1", event.appointment_id
        )
        await conn.execute(
            "UPDATE meetings SET subject = NULL, first_name = NULL, last_initial = NULL, "
            "device = NULL, updated_at = now() WHERE appointment_id = $1",
            event.appointment_id,
        )
    await publish_event(deps.publisher, deps.topics.meetings, confirmation(event, "meetings"))
    log.info(
        "meetings: personal data of appointment %s erased (erasure %s)",
        event.appointment_id,
        event.erasure_id,
        extra={"correlation_id": str(event.correlation_id)},
    )
