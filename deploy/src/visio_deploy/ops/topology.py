"""Who consumes what, read from the code itself: each consuming process's app is built (the
factories do no I/O) and its broker's subscribers give their group and topics. So `ops lag`
and the AsyncAPI document follow the services as they are, not a table that could drift.

Also the topics the system declares, so `ops topics` can flag the ones nobody declared (tansu
creates a topic silently when something publishes to a misspelt name)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr
from visio_runtime.service import Runtime
from visio_shared import Topics

# Process → (its app factory, its settings class). `alerts` is ops' own consumer.
CONSUMING_APPS: dict[str, tuple[str, str]] = {
    "booking": ("visio_booking.app:create_app", "visio_booking.settings:BookingSettings"),
    "meetings": ("visio_meetings.app:create_app", "visio_meetings.settings:MeetingsSettings"),
    "notifications": (
        "visio_notifications.app:create_app",
        "visio_notifications.settings:NotificationsSettings",
    ),
    "consent": ("visio_consent.app:create_app", "visio_consent.settings:ConsentSettings"),
    "alerts": ("visio_deploy.ops.alerts:create_app", "visio_deploy.ops.alerts:AlertsSettings"),
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


def build_runtime_of(service: str, prefix: str) -> Runtime:
    """The service's runtime as its factory wires it, without starting anything."""
    factory, settings_class = (_load(target) for target in CONSUMING_APPS[service])
    # model_construct: no environment read, no validation of the placeholders.
    settings = settings_class.model_construct(topic_prefix=prefix, **_PLACEHOLDERS)
    runtime: Runtime = factory(settings).state.runtime
    return runtime


def subscriptions(prefix: str) -> list[Subscription]:
    found: list[Subscription] = []
    for service in CONSUMING_APPS:
        runtime = build_runtime_of(service, prefix)
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


def groups(prefix: str) -> dict[str, list[str]]:
    """Consumer group → the topics it reads."""
    found: dict[str, list[str]] = {}
    for subscription in subscriptions(prefix):
        found.setdefault(subscription.group, []).extend(subscription.topics)
    return found


def declared_topics(prefix: str) -> set[str]:
    topics = Topics(prefix)
    return {*topics.all(), topics.dlq("alerts"), replays_topic(prefix)}


def replays_topic(prefix: str) -> str:
    """The ledger of dead letters replayed (compacted, keyed by the letter's coordinates)."""
    return f"{prefix}.{REPLAYS_STREAM}"
