"""The alerts process (`visio-rdv ops alerts`, group `visio-rdv.alerts`): a Caf hears of a person
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
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict
from visio_runtime import production
from visio_runtime.db import migrate, role_dsn
from visio_runtime.kafka import ensure_topics
from visio_runtime.production import Finding
from visio_runtime.service import Runtime, build_runtime, create_service_app, serve
from visio_runtime.settings import ServiceSettings, load_settings
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
)

from visio_deploy.ops import alert_mail, alert_store
from visio_deploy.ops.alert_store import SCHEMA
from visio_deploy.ops.settings import email_late_after_minutes

log = logging.getLogger(__name__)

SERVICE = "alerts"
EMAIL_LATE = "email_late"  # alert_store.record_late's cause
CAUSES: dict[type, str] = {
    MeetingFailed: "meeting_failed",
    NotificationFailed: "notification_failed",
}


class AlertsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ALERTS_", extra="ignore", populate_by_name=True)

    http_port: int = 8084
    # An owner connection, for the migration at start; the process then logs in as its role.
    owner_database_url: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "ALERTS_OWNER_DATABASE_URL", "VISIO_DATABASE_URL", "DATABASE_URL"
        ),
    )
    database_url: SecretStr = SecretStr(
        "postgresql://visio_alerts:visio_alerts@127.0.0.1:5432/visio"
    )
    database_password: SecretStr = SecretStr("visio_alerts")  # the development value

    # Where alerts go: each Caf's team (`{"974": "visio@caf974.fr"}`), else the default.
    team_addresses: dict[str, str] = Field(default_factory=dict)
    default_team_address: str = "visio-rdv-exploitation@caf.fr"
    mail_from: str = "Visio RDV - alertes <visio-rdv-alertes@caf.fr>"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_s: float = 30.0

    email_late_after_minutes: float = email_late_after_minutes()
    scan_interval_s: float = 30.0
    # An alert whose appointment copy has not come by then goes out without it.
    orphan_after_minutes: float = 10.0

    def production_findings(self) -> list[Finding]:
        # database_url is built from the owner's and database_password at start (`prepare`).
        findings = [
            finding
            for finding in super().production_findings()
            if finding.setting != production.env_name(self, "database_url")
        ]
        password = self.database_password.get_secret_value()
        if password == SCHEMA.service_role or production.is_development_secret(password):
            findings.append(
                Finding(production.env_name(self, "database_password"), "the development one")
            )
        if not self.smtp_starttls:
            findings.append(
                Finding(
                    production.env_name(self, "smtp_starttls"),
                    "SMTP without TLS: alerts name appointments and Cafs; set it true",
                )
            )
        return findings

    def team_address(self, caf_code: str | None) -> str:
        return self.team_addresses.get(caf_code or "", self.default_team_address)


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
            for event in events:
                await _keep(conn, event)
        await self.send_pending([event.appointment_id for event in events])

    async def send_pending(self, appointment_ids: list[uuid.UUID] | None = None) -> int:
        """Send what is due (for these appointments, or all); each in its own transaction, its
        row locked while the email goes, so a concurrent scan cannot send it too."""
        count = 0
        while True:
            async with self.runtime.db.acquire() as conn, conn.transaction():
                alert = await alert_store.lock_next(
                    conn, appointment_ids, self.settings.orphan_after_minutes
                )
                if alert is None:
                    return count
                recipient = self.settings.team_address(alert.caf_code)
                await self._send(alert_mail.compose(alert, self.settings.mail_from, recipient))
                await alert_store.mark_sent(conn, alert, recipient)
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
        await alert_mail.send(
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
            waiting = await alert_store.waiting(conn)
            late = await alert_store.waiting(conn, threshold) if threshold > 0 else []
            if threshold > 0:
                await alert_store.record_late(conn, threshold)
        self.waiting.set(len({w.appointment_id for w in waiting}))
        self.late.set(len({w.appointment_id for w in late}))
        await self.send_pending()


async def _keep(conn: asyncpg.Connection, event: AppointmentEvent) -> None:
    """What one event changes in the alerts' tables."""
    match event:
        case AppointmentRequested():
            await alert_store.keep_appointment(conn, event)
            await alert_store.owe_email(conn, event)
        case AppointmentRescheduled() | AdvisorReassigned():
            await alert_store.follow_change(conn, event)
            await alert_store.owe_email(conn, event)
        case ContactCorrected() | AppointmentLinkRequested():
            await alert_store.owe_email(conn, event)
        case AppointmentCancelled():
            await alert_store.mark(conn, event.appointment_id, "cancelled_at")
            await alert_store.owe_email(conn, event)
        case NotificationSent():
            if event.kind == "confirmation":
                await alert_store.mark(conn, event.appointment_id, "confirmed_at")
            await alert_store.tell_email(conn, event)
        case MeetingFailed() | NotificationFailed():
            if isinstance(event, NotificationFailed):
                await alert_store.tell_email(conn, event)
            await alert_store.record_alert(
                conn,
                event.appointment_id,
                CAUSES[type(event)],
                event.reason,
                event.detail,
                event.event_id,
            )


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


async def prepare(settings: AlertsSettings) -> AlertsSettings:
    """Run the schema's migration with the owner connection; the settings to run with."""
    if settings.owner_database_url is None:
        raise SystemExit("alerts: set VISIO_DATABASE_URL (an owner connection) for its migration")
    owner = settings.owner_database_url.get_secret_value()
    password = settings.database_password.get_secret_value()
    await migrate(owner, SCHEMA, password)
    dsn = role_dsn(owner, SCHEMA.service_role, password)
    return settings.model_copy(update={"database_url": SecretStr(dsn)})


def main() -> int:
    settings = asyncio.run(prepare(load_settings(AlertsSettings, "visio-rdv ops alerts")))
    serve(create_app(settings), settings)
    return 0
