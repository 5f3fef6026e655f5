"""Who consumes what, read from the code itself: each consuming process's app is built (the
factories do no I/O) and its broker's subscribers give their group and topics. So `ops lag`
and the AsyncAPI document follow the services as they are, not a table that could drift.

Also the topics the system declares, so `ops topics` can flag the ones nobody declared (tansu
creates a topic silently when something publishes to a misspelt name).

Partner systems are booking's configuration (BOOKING_PARTNERS), not the code's: they are given
(`partners`, as `up` declares them) or read off the broker (`partners_on`): a topic named
`<prefix>.booking-requests.<system>.v1` is a declared partner's."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr
from visio_runtime.service import Runtime
from visio_shared import Topics
from visio_shared.topics import PARTNER_REQUESTS

# Process → (its app factory, its settings class).
CONSUMING_APPS: dict[str, tuple[str, str]] = {
    "booking": ("visio_booking.app:create_app", "visio_booking.settings:BookingSettings"),
    "meetings": ("visio_meetings.app:create_app", "visio_meetings.settings:MeetingsSettings"),
    "notifications": (
        "visio_notifications.app:create_app",
        "visio_notifications.settings:NotificationsSettings",
    ),
    "consent": ("visio_consent.app:create_app", "visio_consent.settings:ConsentSettings"),
    "alerts": ("visio_alerts.app:create_app", "visio_alerts.settings:AlertsSettings"),
}

# Placeholders for settings a factory requires but never uses before it starts.
_PLACEHOLDERS: dict[str, Any] = {
    "kafka_bootstrap_servers": "127.0.0.1:9",
    "authority": "https://login.invalid/tenant",
    "client_id": "placeholder",
    "client_secret": SecretStr("placeholder"),
}

REPLAYS_STREAM = "ops.replays"


@dataclass(frozen=True)
class Subscription:
    service: str
    group: str
    topics: tuple[str, ...]
    # Event types the service's shared EventConsumer routes (other messages, such as booking's
    # inbound requests, go to a subscriber of the service's own).
    handled: tuple[str, ...]


def _load(target: str) -> Any:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def build_runtime_of(service: str, prefix: str, partners: Iterable[str] = ()) -> Runtime:
    """The service's runtime as its factory wires it, without starting anything (booking with
    these partner systems declared)."""
    factory, settings_class = (_load(target) for target in CONSUMING_APPS[service])
    own: dict[str, Any] = {"partners": list(partners)} if service == "booking" else {}
    # model_construct: no environment read, no validation of the placeholders.
    settings = settings_class.model_construct(topic_prefix=prefix, **_PLACEHOLDERS, **own)
    runtime: Runtime = factory(settings).state.runtime
    return runtime


def subscriptions(prefix: str, partners: Iterable[str] = ()) -> list[Subscription]:
    found: list[Subscription] = []
    for service in CONSUMING_APPS:
        runtime = build_runtime_of(service, prefix, partners)
        subscriber: Any
        # The broker keeps its subscribers in no stable order (notifications has two): sorted,
        # so the AsyncAPI document and the lag report come out the same on every run.
        by_topics: list[Any] = list(runtime.broker.subscribers)
        for subscriber in sorted(by_topics, key=lambda each: tuple(each.topic_names)):
            topics = tuple(subscriber.topic_names)
            found.append(
                Subscription(
                    service=service,
                    group=subscriber.group_id,
                    topics=topics,
                    handled=tuple(sorted(runtime.consumer.handled)),
                )
            )
    return found


def groups(prefix: str, partners: Iterable[str] = ()) -> dict[str, list[str]]:
    """Consumer group → the topics it reads (booking's with these partners' request topics)."""
    found: dict[str, list[str]] = {}
    for subscription in subscriptions(prefix, partners):
        found.setdefault(subscription.group, []).extend(subscription.topics)
    return found


def partners_on(prefix: str, existing: Iterable[str]) -> list[str]:
    """The partner systems whose request topic is among these (the broker's topics), sorted."""
    topics = Topics(prefix)
    found = {topics.partner_of(topic) for topic in existing}
    return sorted(partner for stream, partner in filter(None, found) if stream == PARTNER_REQUESTS)


def declared_topics(prefix: str, existing: Iterable[str] = ()) -> set[str]:
    """The system's topics, and among `existing` each partner's pair (a partner is declared
    by configuration: its topics, created by booking, are how ops knows it)."""
    topics = Topics(prefix)
    partners = topics.partner_topics(partners_on(prefix, existing))
    return {*topics.all(), *partners, topics.dlq("alerts"), replays_topic(prefix)}


def replays_topic(prefix: str) -> str:
    """The ledger of dead letters replayed (compacted, keyed by the letter's coordinates)."""
    return f"{prefix}.{REPLAYS_STREAM}"
