"""What the local stack is made of: the four services, their schemas, scripts and ports, and
the partner systems it declares on Kafka."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from visio_runtime.db import SchemaSpec


@dataclass(frozen=True)
class ServiceDef:
    name: str
    env_prefix: str
    script: str
    schema_module: str  # the module exposing SCHEMA, the service's SchemaSpec

    def schema(self) -> SchemaSpec:
        spec: SchemaSpec = importlib.import_module(self.schema_module).SCHEMA
        return spec


SERVICES: tuple[ServiceDef, ...] = (
    ServiceDef("booking", "BOOKING_", "visio-rdv-booking", "visio_booking.store"),
    ServiceDef("meetings", "MEETINGS_", "visio-rdv-meetings", "visio_meetings.store"),
    ServiceDef(
        "notifications", "NOTIFICATIONS_", "visio-rdv-notifications", "visio_notifications.store"
    ),
    ServiceDef("consent", "CONSENT_", "visio-rdv-consent", "visio_consent.ledger"),
)

# Two example partner systems, so both sides of every rule between partners can be tried
# locally (docs/partners.md): each has its own request and reply topics.
LOCAL_PARTNERS: tuple[str, ...] = ("caf-portal", "national-scheduler")
