"""What notifications does with each event: keep its own copy of the appointment and of the
meeting, whichever arrives first, and send the confirmation once both halves are there.

One transaction per event holds the per-appointment lock, the processed-event marker, the
stored half and, when the email goes out, its dispatch row: a redelivered event finds its
marker and sends nothing; an SMTP failure worth retrying rolls all of it back, so the retry
starts over (with the same Message-ID). The outcome event is written with the dispatch and
published after the commit (a small outbox), so a Kafka hiccup never loses it.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import TypeVar
from urllib.parse import urlsplit

import asyncpg
from visio_runtime.db import mark_processed
from visio_shared import (
    AppointmentEvent,
    AppointmentRequested,
    MeetingReady,
    NotificationFailed,
    NotificationSent,
    Topics,
    parse_event,
    publish_event,
)
from visio_shared.publishing import Publisher

from visio_notifications import store
from visio_notifications.mailer import (
    MailRejected,
    build_confirmation,
    join_url_allowed,
    message_id,
)
from visio_notifications.settings import NotificationsSettings

log = logging.getLogger(__name__)

MailSender = Callable[[EmailMessage], Awaitable[None]]
E = TypeVar("E", bound=AppointmentEvent)


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Deps:
    """Everything the handlers touch, passed in: the app gives the real ones, tests fakes."""

    pool: asyncpg.Pool
    publisher: Publisher
    settings: NotificationsSettings
    topics: Topics
    send_mail: MailSender
    clock: Callable[[], datetime] = field(default=_utc_now)


async def on_appointment_requested(deps: Deps, event: AppointmentRequested) -> None:
    await _handle(deps, event, store.save_appointment)


async def on_meeting_ready(deps: Deps, event: MeetingReady) -> None:
    await _handle(deps, event, store.save_meeting)


async def _handle(
    deps: Deps, event: E, save: Callable[[asyncpg.Connection, E], Awaitable[bool]]
) -> None:
    async with deps.pool.acquire() as conn, conn.transaction():
        await store.lock_appointment(conn, event.appointment_id)
        if await mark_processed(conn, event.event_id, event.event_type):
            await save(conn, event)
            await _confirm_if_ready(deps, conn, event)
        else:
            log.info(
                "%s %s already processed",
                event.event_type,
                event.event_id,
                extra={"correlation_id": str(event.correlation_id)},
            )
    # Also on a redelivery: it finishes a publication an earlier attempt could not make.
    await publish_outcomes(deps, event.appointment_id)


async def _confirm_if_ready(
    deps: Deps, conn: asyncpg.Connection, trigger: AppointmentEvent
) -> None:
    appointment = await store.load_appointment(conn, trigger.appointment_id)
    meeting = await store.load_meeting(conn, trigger.appointment_id)
    if appointment is None or meeting is None:
        return  # the other half is still on its way
    if meeting.revision < appointment.revision:
        return  # this meeting predates the appointment's latest revision: wait for its own
    if await store.confirmation_settled(conn, appointment.appointment_id, appointment.revision):
        return
    dispatch = await send_confirmation(deps, appointment, meeting, trigger)
    await store.record_dispatch(conn, dispatch)


async def send_confirmation(
    deps: Deps, appointment: AppointmentRequested, meeting: MeetingReady, trigger: AppointmentEvent
) -> store.Dispatch:
    """Build and send the confirmation; a permanent failure is an outcome, not an exception.

    Raises `Transient` (from the mail sender) when the relay may accept it later.
    """
    settings = deps.settings
    kind = "confirmation"
    mid = message_id(
        appointment.appointment_id, appointment.revision, kind, settings.message_id_domain
    )
    lineage = trigger.caused(
        appointment_id=appointment.appointment_id, revision=appointment.revision
    )
    context = {"correlation_id": str(appointment.correlation_id)}
    recipient = recipient_sha256(str(appointment.user.email))

    def failed(reason: str, detail: str) -> store.Dispatch:
        log.warning(
            "confirmation of %s r%d failed: %s (%s)",
            appointment.appointment_id,
            appointment.revision,
            reason,
            detail,
            extra=context,
        )
        event = NotificationFailed(kind=kind, reason=reason, detail=detail, **lineage)
        return store.Dispatch(
            appointment.appointment_id,
            appointment.revision,
            kind,
            mid,
            recipient,
            "failed",
            event,
            reason=reason,
            detail=detail,
        )

    if not join_url_allowed(meeting.join_url, settings.teams_url_allowlist):
        host = urlsplit(meeting.join_url).hostname or "?"
        return failed("join_url_not_allowed", f"join URL on host {host!r} is not in the allow-list")

    now = deps.clock()
    message = build_confirmation(appointment, meeting, settings, now=now)
    try:
        await deps.send_mail(message)
    except MailRejected as exc:
        return failed("smtp_rejected", str(exc))

    log.info(
        "confirmation of %s r%d sent as %s",
        appointment.appointment_id,
        appointment.revision,
        mid,
        extra=context,
    )
    event = NotificationSent(kind=kind, message_id=mid, **lineage)
    return store.Dispatch(
        appointment.appointment_id,
        appointment.revision,
        kind,
        mid,
        recipient,
        "sent",
        event,
        sent_at=now,
    )


async def publish_outcomes(deps: Deps, appointment_id: uuid.UUID | None = None) -> int:
    """Publish the NotificationSent / NotificationFailed not yet on Kafka (of one appointment,
    or all of them at start-up), one row lock each; returns how many. Only a crash between the
    publish and the commit gives a duplicate, with the same event_id, which consumers skip."""
    published = 0
    async with deps.pool.acquire() as conn:
        while True:
            async with conn.transaction():
                claimed = await store.claim_unpublished(conn, appointment_id)
                if claimed is None:
                    return published
                dispatch_id, payload = claimed
                await publish_event(deps.publisher, deps.topics.notifications, parse_event(payload))
                await store.mark_published(conn, dispatch_id)
            published += 1


def recipient_sha256(address: str) -> str:
    """Which address a dispatch went to, comparable later, without keeping the address."""
    return hashlib.sha256(address.strip().lower().encode()).hexdigest()
