"""What the handlers and the poller touch, passed in: the app gives the real ones, tests fakes
(and a clock they can move, to fire reminders)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
from visio_shared import Topics
from visio_shared.publishing import Publisher

from visio_notifications.mime import Mail
from visio_notifications.settings import NotificationsSettings
from visio_notifications.sms_metrics import SmsMetrics
from visio_notifications.sms_provider import SmsProvider
from visio_notifications.unrecorded import Unrecorded

MailSender = Callable[[Mail], Awaitable[None]]
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class NotificationsDeps:
    pool: asyncpg.Pool
    publisher: Publisher
    settings: NotificationsSettings
    topics: Topics
    send_mail: MailSender
    clock: Clock = field(default=utc_now)
    sms: SmsProvider | None = None  # None: no text is sent (NOTIFICATIONS_SMS_PROVIDER=none)
    sms_metrics: SmsMetrics | None = None
    # Emails the relay took whose dispatch is not committed yet: one per process (the app's).
    unrecorded: Unrecorded = field(default_factory=Unrecorded)
