"""Notifications' part of an erasure: its copy of the appointment (names, address, mobile,
subject) and of the meeting, the reminders and the requests for the email again go; the dispatch
logs keep which email or text went when and how it ended, without the recipient's hash or the
relay's or provider's words (which may quote the address or the number), the bounces keep no
diagnostic and no DSN, and no pending text goes; the local sink's copies of the emails go too.
The id is remembered, so a replayed event sends nothing and stores nothing. Then
`PersonalDataErased`."""

from __future__ import annotations

import logging
from pathlib import Path

from visio_runtime.db import mark_processed
from visio_runtime.erasure import confirmation, remember_erased
from visio_shared import PersonalDataErasureRequested, publish_event

from visio_notifications import store
from visio_notifications.deps import NotificationsDeps

log = logging.getLogger(__name__)

_ERASE = (
    "DELETE FROM appointments WHERE appointment_id = $1",
    "DELETE FROM meetings WHERE appointment_id = $1",
    "DELETE FROM reminders WHERE appointment_id = $1",
    "DELETE FROM link_requests WHERE appointment_id = $1",
    "UPDATE dispatches SET recipient_sha256 = '', detail = '', join_url = NULL, "
    "event = CASE WHEN event ? 'detail' THEN jsonb_set(event, '{detail}', '\"\"') ELSE event END "
    "WHERE appointment_id = $1",
    # Texts: those not sent yet never go; the log keeps which went when, without the number's
    # hash or the provider's words (which may quote the number).
    "UPDATE sms_messages SET status = 'cancelled' WHERE appointment_id = $1 AND status = 'pending'",
    "UPDATE sms_messages SET recipient_sha256 = NULL, last_error = NULL, "
    "failure_event = CASE WHEN failure_event ? 'detail' "
    "THEN jsonb_set(failure_event, '{detail}', '\"\"') ELSE failure_event END "
    "WHERE appointment_id = $1",
    # Bounces: the relay's diagnostic and a kept DSN quote the address.
    "UPDATE bounces SET diagnostic = '', raw = NULL, "
    "event = CASE WHEN event ? 'detail' THEN jsonb_set(event, '{detail}', '\"\"') ELSE event END "
    "WHERE appointment_id = $1",
)


async def on_erasure_requested(
    deps: NotificationsDeps, event: PersonalDataErasureRequested
) -> None:
    """Idempotent: erasing again finds nothing and confirms again (the same event id)."""
    async with deps.pool.acquire() as conn, conn.transaction():
        await store.LOCKS.hold(conn, event.appointment_id)
        await remember_erased(conn, event.appointment_id, event.erasure_id)
        for statement in _ERASE:
            await conn.execute(statement, event.appointment_id)
        await mark_processed(conn, event.event_id, event.event_type)
    removed = erase_sink_copies(deps.settings.mail_sink_dir, str(event.appointment_id))
    await publish_event(
        deps.publisher, deps.topics.notifications, confirmation(event, "notifications")
    )
    log.info(
        "notifications: personal data of appointment %s erased (erasure %s, %d sink files)",
        event.appointment_id,
        event.erasure_id,
        removed,
        extra={"correlation_id": str(event.correlation_id)},
    )


def erase_sink_copies(mail_dir: Path | None, appointment_id: str) -> int:
    """The local sink stores each email as `<Message-ID>.eml`, and our Message-IDs start with
    the appointment id (`compose.message_id`)."""
    if mail_dir is None or not mail_dir.is_dir():
        return 0
    removed = 0
    for path in mail_dir.glob(f"{appointment_id}.*.eml"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed
