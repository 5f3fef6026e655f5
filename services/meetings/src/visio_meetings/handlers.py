"""What meetings does with an appointment: a Teams meeting in the advisor's calendar, then an
answer on `meetings.v1` — `MeetingReady`, or `MeetingFailed` when Graph refuses for good.

Delivery is at least once, so every step is safe to repeat:
- Graph: the event's transactionId is derived from the appointment id, so a retry (after a
  timeout that hid a success, say) gets the event already created, never a second one; the
  meeting lookup and the options PATCH are idempotent by nature.
- The answer is published *before* the meeting row and the processed-event marker commit
  (together): a crash in between redelivers the event, which repeats the (idempotent) work and
  publishes again. The answer's event_id is derived from the cause's, so that repeat is the
  very same event, which consumers skip by event_id.
- An appointment whose meeting is already `ready` gets no second answer: the row commits only
  after its `MeetingReady` was published, so that answer is on the topic already, and a second
  one (with another event id) would mean a second confirmation email.

Transient failures (throttling, 5xx, network, a meeting Graph does not list yet) propagate:
the shared consumer retries them, then dead-letters them for ops to replay.
"""

from __future__ import annotations

import logging
import uuid

import asyncpg
from visio_runtime.db import mark_processed
from visio_runtime.errors import Transient
from visio_shared import AppointmentRequested, Envelope, MeetingFailed, MeetingReady, Topics
from visio_shared.publishing import Publisher, publish_event

from visio_meetings import store
from visio_meetings.graph import GraphClient, GraphRefused, transaction_id

log = logging.getLogger(__name__)

_ANSWER_NAMESPACE = uuid.UUID("0b6a1f7e-3c55-4f57-9a59-6c1d1b8f4e21")


def answer_id(cause: Envelope, event_type: str) -> uuid.UUID:
    """The event_id of our answer to `cause`: the same on every redelivery of `cause`."""
    return uuid.uuid5(_ANSWER_NAMESPACE, f"{cause.event_id}/{event_type}")


async def handle_appointment_requested(
    event: AppointmentRequested,
    *,
    pool: asyncpg.Pool,
    graph: GraphClient,
    publisher: Publisher,
    topics: Topics,
) -> None:
    context = {"correlation_id": str(event.correlation_id)}
    if await store.is_processed(pool, event.event_id):
        log.info("meetings: event %s already handled", event.event_id, extra=context)
        return
    existing = await store.get_meeting(pool, event.appointment_id)
    if existing is not None and existing.status == "ready":
        log.info(
            "meetings: appointment %s already has its meeting", event.appointment_id, extra=context
        )
        async with pool.acquire() as conn, conn.transaction():
            await mark_processed(conn, event.event_id, event.event_type)
        return

    advisor_id = event.advisor.id
    recording = event.consent.recording_authorised
    try:
        created = await graph.create_event(advisor_id, event)
        join_url = (created.get("onlineMeeting") or {}).get("joinUrl")
        if not join_url:
            raise GraphRefused(
                "NoTeamsMeeting",
                "Graph created the event without a Teams meeting: is Teams enabled for the "
                "advisor's mailbox?",
                status=422,
                reason="graph_no_teams_meeting",
            )
        meeting = await graph.find_online_meeting(advisor_id, join_url)
        if meeting is None:
            # Graph lists a new meeting a little after the event that created it.
            raise Transient("the Teams meeting is not listed by its join URL yet")
        await graph.update_meeting_options(
            advisor_id, meeting["id"], recording_authorised=recording
        )
    except GraphRefused as refused:
        await _answer_failure(event, refused, pool=pool, publisher=publisher, topics=topics)
        return

    ready = MeetingReady(
        event_id=answer_id(event, "MeetingReady"),
        join_url=join_url,
        graph_event_id=created["id"],
        online_meeting_id=meeting["id"],
        advisor_id=advisor_id,
        **event.caused(appointment_id=event.appointment_id, revision=event.revision),
    )
    await publish_event(publisher, topics.meetings, ready)
    async with pool.acquire() as conn, conn.transaction():
        if await mark_processed(conn, event.event_id, event.event_type):
            await store.save_ready(
                conn,
                store.Meeting(
                    appointment_id=event.appointment_id,
                    revision=event.revision,
                    advisor_id=advisor_id,
                    transaction_id=transaction_id(event.appointment_id),
                    graph_event_id=created["id"],
                    online_meeting_id=meeting["id"],
                    join_url=join_url,
                    status="ready",
                    failure_reason=None,
                ),
            )
    log.info(
        "meetings: meeting ready for appointment %s (recording %s)",
        event.appointment_id,
        "allowed" if recording else "off",
        extra=context,
    )


async def _answer_failure(
    event: AppointmentRequested,
    refused: GraphRefused,
    *,
    pool: asyncpg.Pool,
    publisher: Publisher,
    topics: Topics,
) -> None:
    """Graph refused for good: say so, so booking and the person are not left waiting.

    A calendar event already created stays: once ops fix the cause (an access policy, say)
    and replay, the same transactionId brings it back instead of a second one.
    """
    failed = MeetingFailed(
        event_id=answer_id(event, "MeetingFailed"),
        reason=refused.reason,
        detail=f"{refused.code}: {refused.message}"[:1000],
        **event.caused(appointment_id=event.appointment_id, revision=event.revision),
    )
    await publish_event(publisher, topics.meetings, failed)
    async with pool.acquire() as conn, conn.transaction():
        if await mark_processed(conn, event.event_id, event.event_type):
            await store.save_failed(
                conn,
                appointment_id=event.appointment_id,
                revision=event.revision,
                advisor_id=event.advisor.id,
                transaction_id=transaction_id(event.appointment_id),
                reason=f"{failed.reason}: {failed.detail}",
            )
    log.warning(
        "meetings: Graph refused the meeting of appointment %s: %s %s",
        event.appointment_id,
        refused.status,
        refused.code,
        extra={"correlation_id": str(event.correlation_id)},
    )
