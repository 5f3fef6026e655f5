"""What happened in the meeting, into the ledger (CGU article 9: the file of connections and
operations, the recording included, is proof between the person and the Cnaf).

From meetings.v1: `MeetingAttendanceRecorded` and `MeetingAttendanceUnavailable` become a
`connection` record, `MeetingRecordingAvailable` a `recording_reference` record, each under the
appointment's subject_ref and idempotent by the source event id. Pseudonymous like the rest:
participants by role with their times, never a name or an address (meetings sends none).

From appointments.v1: `AdvisorOutcomeReported`, the advisor's own report (signed in with Entra
ID on booking's advisor page), is a `connection` record with `attendance: reported_by_advisor`,
the outcome and the advisor's object id. Where it disagrees with Graph's attendance report both
records stay: the advisor's sets the status (booking), the chain keeps the two as proof.

An unavailable report is a `connection` record too, saying `attendance: unavailable` and why:
it answers the same question (who connected) with "unknown", so the file shows the gap rather
than a silence a reader could take for "nobody came". Each append is announced on consents.v1
as `ConsentRecorded`, like every other append.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, assert_never

import asyncpg
from visio_runtime.db import mark_processed
from visio_runtime.errors import Transient
from visio_shared import AdvisorOutcomeReported, LedgerEntry, Topics, publish_event

# From the module: the package's __init__ does not re-export these (yet).
from visio_shared.events import (
    MeetingAttendanceRecorded,
    MeetingAttendanceUnavailable,
    MeetingRecordingAvailable,
)
from visio_shared.publishing import Publisher

from visio_consent import store
from visio_consent.handlers import announcement
from visio_consent.ledger import append, iso_utc

log = logging.getLogger(__name__)

MeetingOutcome = (
    MeetingAttendanceRecorded
    | MeetingAttendanceUnavailable
    | MeetingRecordingAvailable
    | AdvisorOutcomeReported
)
# The advisor's report comes from booking on appointments.v1, the rest from meetings.v1.
MEETING_EVENTS = (
    MeetingAttendanceRecorded,
    MeetingAttendanceUnavailable,
    MeetingRecordingAvailable,
    AdvisorOutcomeReported,
)


async def record_meeting_outcome(
    event: MeetingOutcome, pool: asyncpg.Pool, publisher: Publisher, topics: Topics
) -> list[LedgerEntry]:
    """Append the event's record and announce it (ConsentRecorded); a redelivery appends
    nothing and announces the same event again, with the same event id."""
    async with pool.acquire() as conn, conn.transaction():
        appointment = await store.lock_appointment(conn, event.appointment_id)
        if appointment is None:
            # Another topic: the appointment's consent may not be recorded yet (or waits in
            # the dead-letter topic). Retried, then dead-lettered for a replay: never dropped.
            raise Transient(f"appointment {event.appointment_id} has no recorded consent yet")
        entries: list[LedgerEntry] = []
        if await mark_processed(conn, event.event_id, event.event_type):
            entries = await append(conn, [outcome_record(event, appointment)])
        else:
            log.info("consent: %s %s already recorded", event.event_type, event.event_id)
        recorded = await announcement(conn, event)
    if recorded is not None:
        await publish_event(publisher, topics.consents, recorded)
    return entries


def outcome_record(event: MeetingOutcome, appointment: store.Appointment) -> dict[str, Any]:
    common: dict[str, Any] = {
        "subject_ref": appointment.subject_ref,
        "appointment_id": str(event.appointment_id),
        "revision": event.revision,
        "source_event_id": str(event.event_id),
        "cgu_version": appointment.cgu_version,
    }
    if isinstance(event, AdvisorOutcomeReported):
        # The advisor's word, signed in: their Entra object id, never their name. The comment
        # stays in booking (erasable); the chain holds its digest, to prove it unaltered.
        comment = event.comment
        return {
            **common,
            "kind": "connection",
            "attendance": "reported_by_advisor",
            "outcome": event.outcome,
            "advisor_id": event.advisor_id,
            "reported_at": iso_utc(event.reported_at),
            "comment_sha256": hashlib.sha256(comment.encode()).hexdigest() if comment else None,
        }
    common["online_meeting_id"] = event.online_meeting_id
    match event:
        case MeetingAttendanceRecorded():
            return {
                **common,
                "kind": "connection",
                "attendance": "recorded",
                "report_id": event.report_id,
                "meeting_start": iso_utc(event.meeting_start),
                "meeting_end": iso_utc(event.meeting_end),
                "public_attended": event.public_attended,
                "participants": [
                    {
                        "role": p.role,
                        "total_attendance_seconds": p.total_attendance_seconds,
                        "intervals": [
                            {
                                "joined_at": iso_utc(i.joined_at),
                                "left_at": iso_utc(i.left_at),
                                "duration_seconds": i.duration_seconds,
                            }
                            for i in p.intervals
                        ],
                    }
                    for p in event.participants
                ],
            }
        case MeetingAttendanceUnavailable():
            return {
                **common,
                "kind": "connection",
                "attendance": "unavailable",
                "reason": event.reason,
                "noted_at": iso_utc(event.occurred_at),
            }
        case MeetingRecordingAvailable():
            return {
                **common,
                "kind": "recording_reference",
                "recording_id": event.recording_id,
                "recording_created_at": iso_utc(event.created_at),
                "content_correlation_id": event.content_correlation_id,
            }
        case _:
            assert_never(event)
