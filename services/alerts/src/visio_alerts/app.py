"""The alerts service (`visio-rdv-alerts`, group `visio-rdv.alerts`): a Caf hears of a person
left without a meeting or an email. `MeetingFailed` and `NotificationFailed` (failures for
good), and an email a person has waited for longer than VISIO_EMAIL_LATE_AFTER_MINUTES (their
confirmation, an update, a cancellation, the link asked for again), each send one email to the
Caf's team address — never more than one per appointment, cause and occasion (the table's
primary key). The people waiting, and those waiting past the threshold, are gauges on
/metrics, with the threshold itself, for monitoring rules to use the same one.

Events come on three topics in no agreed order, so it keeps its own copy of each appointment
(Caf, advisor, time) and sends an alert once both halves are there; an alert whose appointment
never shows up is sent anyway after a while, to the default address. It is a service like the
others — the shared consumer with its retries and dead letters, /health, /metrics — and it runs
its own migration (schema `alerts`) at start.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from email.message import EmailMessage

import asyncpg
from fastapi import FastAPI
from visio_runtime.kafka import ensure_topics
from visio_runtime.service import Runtime, build_runtime, create_service_app
from visio_shared import (
    AdvisorReassigned,
    AppointmentCancelled,
    AppointmentEvent,
    AppointmentLinkRequested,
    AppointmentRequested,
    AppointmentRescheduled,
    ContactCorrected,
    MeetingFailed,
    NotificationFailed,
    NotificationSent,
    SmsFailed,
)

from visio_alerts import mail, store
from visio_alerts.settings import AlertsSettings

log = logging.getLogger(__name__)

SERVICE = "alerts"
EMAIL_LATE = "email_late"  # store.record_late's cause
CAUSES: dict[type, str] = {
    MeetingFailed: "meeting_failed",
    NotificationFailed: "notification_failed",
    SmsFailed: "sms_failed",
}


class Alerts:
    def __init__(self, runtime: Runtime, settings: AlertsSettings) -> None:
        self.runtime = runtime
        self.settings = settings
        metrics = runtime.metrics
        self.sent = metrics.counter(
            "alerts_sent_total", "Alert emails sent to a Caf team, by cause.", ["cause"]
        )
        for cause in [*CAUSES.values(), EMAIL_LATE]:  # at 0 from the start, for rate()
            self.sent.labels(cause=cause)
        self.waiting = metrics.gauge(
            "people_waiting_for_an_email",
            "People owed an email (their confirmation, an update, a cancellation, the link "
            "asked for again) that has not gone yet, as of the last scan.",
        )
        self.late = metrics.gauge(
            "people_waiting_for_an_email_past_threshold",
            "Of those, the people waiting longer than VISIO_EMAIL_LATE_AFTER_MINUTES: each "
            "also raised an email_late alert to their Caf.",
        )
        metrics.gauge(
            "email_late_threshold_seconds",
            "VISIO_EMAIL_LATE_AFTER_MINUTES in seconds (0: no alert), for rules to use the "
            "same threshold.",
        ).set(settings.email_late_after_minutes * 60)

    async def on_events(self, events: list[AppointmentEvent]) -> None:
        """A batch of events (the consumer's `on_batch`, one per appointment): their bookkeeping
        in one transaction, then whatever alerts they made due. Idempotent without markers:
        every write is an insert that ignores a repeat, or a change that keeps the first."""
        async with self.runtime.db.acquire() as conn, conn.transaction():
            await keep(conn, events)
        await self.send_pending([event.appointment_id for event in events])

    async def send_pending(self, appointment_ids: list[uuid.UUID] | None = None) -> int:
        """Send what is due (for these appointments, or all); each in its own transaction, its
        row locked while the email goes, so a concurrent scan cannot send it too."""
        count = 0
        while True:
            async with self.runtime.db.acquire() as conn, conn.transaction():
                alert = await store.lock_next(
                    conn, appointment_ids, self.settings.orphan_after_minutes
                )
                if alert is None:
                    return count
                recipient = self.settings.team_address(alert.caf_code)
                await self._send(mail.compose(alert, self.settings.mail_from, recipient))
                await store.mark_sent(conn, alert, recipient)
            self.sent.labels(cause=alert.cause).inc()
            log.warning(
                "alert sent: %s for appointment %s",
                alert.cause,
                alert.appointment_id,
                extra={"appointment_id": str(alert.appointment_id)},
            )
            count += 1

    async def _send(self, message: EmailMessage) -> None:
        settings = self.settings
        await mail.send(
            message,
            settings.smtp_host,
            settings.smtp_port,
            starttls=settings.smtp_starttls,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            timeout_s=settings.smtp_timeout_s,
        )

    async def scan(self) -> None:
        """Late emails, and alerts left waiting for their appointment: checked every
        scan_interval_s."""
        while True:
            try:
                await self.scan_once()
            except Exception:  # the relay or the database away: the next scan tries again
                log.exception("alerts: scan failed")
            await asyncio.sleep(self.settings.scan_interval_s)

    async def scan_once(self) -> None:
        threshold = self.settings.email_late_after_minutes
        async with self.runtime.db.acquire() as conn:
            waiting, late = await store.waiting_counts(conn, threshold)
            if threshold > 0:
                await store.record_late(conn, threshold)
        self.waiting.set(waiting)
        self.late.set(late if threshold > 0 else 0)
        await self.send_pending()


async def keep(conn: asyncpg.Connection, events: list[AppointmentEvent]) -> None:
    """What a batch of events (one per appointment) changes in the alerts' tables: each kind
    of write in one statement for the batch; the rare events (a change of time or advisor, a
    failure) one statement each. Since a batch holds one event per appointment, the order of
    the writes within it is the order of each appointment's own."""
    await store.keep_appointments(
        conn, [event for event in events if isinstance(event, AppointmentRequested)]
    )
    for event in events:
        match event:
            case AppointmentRescheduled() | AdvisorReassigned():
                await store.follow_change(conn, event)
            case SmsFailed() | MeetingFailed() | NotificationFailed():
                await store.record_alert(
                    conn,
                    event.appointment_id,
                    CAUSES[type(event)],
                    event.reason,
                    event.detail,
                    event.event_id,
                )
    await store.mark(
        conn,
        [e.appointment_id for e in events if isinstance(e, AppointmentCancelled)],
        "cancelled_at",
    )
    await store.mark(
        conn,
        [
            e.appointment_id
            for e in events
            if isinstance(e, NotificationSent) and e.kind == "confirmation"
        ],
        "confirmed_at",
    )
    owed = [event for event in events if type(event) in store.OWED_EMAIL]
    told = [event for event in events if isinstance(event, NotificationSent | NotificationFailed)]
    await store.owe_emails(conn, owed)
    await store.tell_emails(conn, told)
    await store.mark_told(conn, [event.appointment_id for event in [*owed, *told]])


def create_app(settings: AlertsSettings | None = None) -> FastAPI:
    settings = settings or AlertsSettings()
    runtime = build_runtime(SERVICE, settings)
    alerts = Alerts(runtime, settings)
    runtime.consumer.on_batch(
        AppointmentRequested,
        AppointmentRescheduled,
        ContactCorrected,
        AdvisorReassigned,
        AppointmentCancelled,
        AppointmentLinkRequested,
        NotificationSent,
        MeetingFailed,
        NotificationFailed,
        SmsFailed,
    )(alerts.on_events)
    topics = runtime.topics
    runtime.consumer.subscribe(topics.appointments, topics.meetings, topics.notifications)

    async def ensure_own_dlq(_: Runtime) -> None:
        # The services' dead-letter topics are created with the others; this one is ours.
        await ensure_topics(settings, [topics.dlq(SERVICE)])

    runtime.on_start.append(ensure_own_dlq)
    runtime.run_in_background(alerts.scan, "alerts-scan")
    app = create_service_app(runtime, title="Visio RDV alerts")
    app.state.alerts = alerts
    return app
