"""`ops purge`: personal data past its retention period, removed wherever it lives — booking's
and notifications' tables and the alerts' copy (each service purges its own, asked here through
its public `retention` module), the local mail sink's files — and every topic
checked for its retention (dead letters included). Safe to schedule: each run deletes only what
expired since the last one, each schema in one transaction; `--dry-run` counts and rolls back.

What is removed, and for how long each thing is kept, is docs/personal-data.md. The
consent ledger is not touched: its proof is pseudonymous and has its own rules (issue 6). Nor
are the self-service pages' rate limits (keyed hashes, an hour's count): booking and consent
drop their own windows after a day.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

import asyncpg
import visio_alerts.retention
import visio_booking.retention
import visio_notifications.retention
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from visio_runtime.kafka import admin_client, topic_configs
from visio_runtime.retention import Period

from visio_deploy.ops.settings import OpsSettings
from visio_deploy.ops.topology import declared_topics, replays_topic

log = logging.getLogger(__name__)

PurgeExpired = Callable[
    [asyncpg.Connection, Mapping[Period, float], datetime, bool], Awaitable[dict[str, int]]
]


# Each service purges its own tables (its public `retention` module), in this order, each in one
# transaction over its schema.
SERVICES: tuple[tuple[str, PurgeExpired], ...] = (
    ("booking", visio_booking.retention.purge_expired),
    ("notifications", visio_notifications.retention.purge_expired),
    ("alerts", visio_alerts.retention.purge_expired),
)


async def purge_tables(
    settings: OpsSettings, dry_run: bool = False, now: datetime | None = None
) -> dict[str, int]:
    """Rows removed per table, as each service reports them (tables not there yet — a schema
    not migrated — are skipped)."""
    now = now or datetime.now(UTC)
    days: dict[Period, float] = {
        "appointment": settings.appointment_retention_days,
        "outbox": settings.outbox_retention_days,
    }
    removed: dict[str, int] = {}
    conn = await asyncpg.connect(settings.database_url.get_secret_value())
    try:
        for _, purge_expired in SERVICES:
            removed.update(await purge_expired(conn, days, now, dry_run))
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
