"""`ops purge`: personal data past its retention period, removed wherever it lives — booking's
and notifications' tables, the alerts' copy, the local mail sink's files — and every topic
checked for its retention (dead letters included). Safe to schedule: each run deletes only what
expired since the last one, each schema in one transaction; `--dry-run` counts and rolls back.

What is removed, and for how long each thing is kept, is docs/personal-data.md. The
consent ledger is not touched: its proof is pseudonymous and has its own rules (issue 6). Nor
are the self-service pages' rate limits (keyed hashes, an hour's count): booking and consent
drop their own windows after a day.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from visio_runtime.kafka import admin_client, topic_configs

from visio_deploy.ops.settings import OpsSettings
from visio_deploy.ops.topology import declared_topics, replays_topic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rule:
    table: str  # schema.table
    period: str  # the OpsSettings field holding its retention, in days
    delete: str  # $1: the cutoff (rows older than it go)


# An appointment's data expires with the appointment (its end, plus the retention period).
_BOOKING_EXPIRED = (
    "SELECT appointment_id FROM booking.appointments "
    "WHERE start_at + duration_minutes * interval '1 minute' < $1"
)
# Notifications keeps a copy per appointment; rows whose copy never came expire by their age.
_NOTIFICATIONS_EXPIRED = "SELECT appointment_id FROM notifications.appointments WHERE start_at < $1"


def _without_copy(table: str, written: str) -> str:
    return (
        f"DELETE FROM notifications.{table} t WHERE t.appointment_id IN ({_NOTIFICATIONS_EXPIRED})"
        f" OR (t.{written} < $1 AND NOT EXISTS (SELECT 1 FROM notifications.appointments a"
        " WHERE a.appointment_id = t.appointment_id))"
    )


# Dependent rows first: each schema's expired set is read from its appointments table.
RULES = (
    Rule(
        "booking.appointment_history",
        "appointment_retention_days",
        f"DELETE FROM booking.appointment_history WHERE appointment_id IN ({_BOOKING_EXPIRED})",
    ),
    Rule(
        "booking.appointments",
        "appointment_retention_days",
        f"DELETE FROM booking.appointments WHERE appointment_id IN ({_BOOKING_EXPIRED})",
    ),
    Rule(
        "booking.outbox",
        "outbox_retention_days",
        "DELETE FROM booking.outbox WHERE published_at < $1",
    ),
    Rule(
        "notifications.reminders",
        "appointment_retention_days",
        "DELETE FROM notifications.reminders WHERE start_at < $1",
    ),
    Rule(
        "notifications.dispatches",
        "appointment_retention_days",
        _without_copy("dispatches", "recorded_at"),
    ),
    # No personal data (ids, the reason, the outcome), but it tells that the person asked:
    # it goes with the appointment's other rows.
    Rule(
        "notifications.link_requests",
        "appointment_retention_days",
        _without_copy("link_requests", "requested_at"),
    ),
    Rule(
        "notifications.meetings",
        "appointment_retention_days",
        _without_copy("meetings", "updated_at"),
    ),
    Rule(
        "notifications.appointments",
        "appointment_retention_days",
        "DELETE FROM notifications.appointments WHERE start_at < $1",
    ),
    Rule(
        "alerts.alerts",
        "appointment_retention_days",
        "DELETE FROM alerts.alerts WHERE start_at < $1 OR (start_at IS NULL AND recorded_at < $1)",
    ),
    Rule(
        "alerts.appointments",
        "appointment_retention_days",
        "DELETE FROM alerts.appointments WHERE start_at < $1",
    ),
    # Ids, kinds and times only, but they tell of the person's emails: as long as the rest.
    Rule(
        "alerts.emails_owed",
        "appointment_retention_days",
        "DELETE FROM alerts.emails_owed WHERE owed_since < $1",
    ),
    Rule(
        "alerts.emails_told",
        "appointment_retention_days",
        "DELETE FROM alerts.emails_told WHERE told_at < $1",
    ),
)


async def purge_tables(
    settings: OpsSettings, dry_run: bool = False, now: datetime | None = None
) -> dict[str, int]:
    """Rows removed per table (tables not there yet — a schema not migrated — are skipped)."""
    now = now or datetime.now(UTC)
    removed: dict[str, int] = {}
    conn = await asyncpg.connect(settings.database_url.get_secret_value())
    try:
        for schema in dict.fromkeys(rule.table.split(".")[0] for rule in RULES):
            transaction = conn.transaction()
            await transaction.start()
            try:
                for rule in (rule for rule in RULES if rule.table.startswith(f"{schema}.")):
                    if await conn.fetchval("SELECT to_regclass($1)", rule.table) is None:
                        continue
                    cutoff = now - timedelta(days=getattr(settings, rule.period))
                    status = await conn.execute(rule.delete, cutoff)
                    removed[rule.table] = int(status.split()[-1])
            except BaseException:
                await transaction.rollback()
                raise
            await (transaction.rollback() if dry_run else transaction.commit())
    finally:
        await conn.close()
    return removed


def purge_mail(settings: OpsSettings, dry_run: bool = False) -> int:
    """The local SMTP sink's stored messages (Mailpit, in docker-compose, has MP_MAX_AGE)."""
    if not settings.mail_dir.is_dir():
        return 0
    max_age_s = settings.mail_retention_days * 86400
    if dry_run:
        limit = datetime.now(UTC).timestamp() - max_age_s
        return sum(1 for path in settings.mail_dir.glob("*.eml") if path.stat().st_mtime < limit)
    # The sink's own rule for its files; imported here, as only a local stack has a sink (deploy's
    # `local` extra): a production image, with no sink folder, returns above.
    from visio_fakes.smtp_sink import MailSink

    return MailSink(settings.mail_dir).purge(max_age_s)


async def check_topic_retention(settings: OpsSettings, dry_run: bool = False) -> dict[str, str]:
    """Each declared topic's retention against the settings: 'ok', 'set' (it was missing or
    longer, and is now set), or why it could not be set (tansu cannot alter topic configs)."""
    report: dict[str, str] = {}
    admin = admin_client(settings)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        # The replay ledger is compacted (no time retention) and names no one.
        topics = declared_topics(settings.topic_prefix, existing) - {
            replays_topic(settings.topic_prefix)
        }
        for topic in sorted(topics & existing):
            wanted = topic_configs(settings, topic).get("retention.ms")
            if wanted is None:
                continue
            current = await _retention_ms(admin, topic)
            if current is not None and 0 <= current <= int(wanted):
                report[topic] = "ok"
            elif dry_run:
                report[topic] = f"would set retention.ms={wanted} (now {current})"
            else:
                report[topic] = await _set_retention(admin, topic, wanted)
    finally:
        await admin.close()
    return report


async def _retention_ms(admin: AIOKafkaAdminClient, topic: str) -> int | None:
    resource = ConfigResource(ConfigResourceType.TOPIC, topic)
    for response in await admin.describe_configs([resource]):
        # (error_code, error_message, resource_type, resource_name, config_entries)
        for *_, entries in response.resources:
            for name, value, *_ in entries:
                if name == "retention.ms" and value is not None:
                    return int(value)
    return None


async def _set_retention(admin: AIOKafkaAdminClient, topic: str, wanted: str) -> str:
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs={"retention.ms": wanted})
    try:
        await admin.alter_configs([resource])
    except Exception as exc:  # tansu: no AlterConfigs; its storage is memory anyway
        return f"not set: {type(exc).__name__}: {exc}"
    return f"set retention.ms={wanted}"
