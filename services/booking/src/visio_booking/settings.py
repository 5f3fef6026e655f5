from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict
from visio_runtime.settings import ServiceSettings

from visio_booking.outbox import RelaySettings


class BookingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="BOOKING_", extra="ignore")

    http_port: int = 8080
    database_url: SecretStr = SecretStr(
        "postgresql://visio_booking:visio_booking@127.0.0.1:5432/visio"
    )

    booking_horizon_days: int = 180
    min_duration_minutes: int = 10
    max_duration_minutes: int = 120
    max_body_bytes: int = 64 * 1024
    cgu_url: str = "https://www.caf.fr/visio-rdv/cgu"

    # Systems on booking-requests.v1 that may change any caller's appointments (JSON list).
    inbound_admin_systems: list[str] = Field(default_factory=list)

    outbox_batch_size: int = 200
    outbox_poll_interval_s: float = 0.5
    outbox_standby_interval_s: float = 1.0
    # Above the producer's own delivery timeout (request_timeout_ms, 40 s): the producer, not
    # this bound, normally decides that a message failed, so a retry is never a duplicate of a
    # message still buffered. Lower it only to see outages sooner (tests).
    outbox_publish_timeout_s: float = 60.0
    outbox_retention_hours: int = 168
    idempotency_retention_days: int = 30

    def relay(self) -> RelaySettings:
        return RelaySettings(
            batch_size=self.outbox_batch_size,
            poll_interval_s=self.outbox_poll_interval_s,
            standby_interval_s=self.outbox_standby_interval_s,
            publish_timeout_s=self.outbox_publish_timeout_s,
            outbox_retention_hours=self.outbox_retention_hours,
            idempotency_retention_days=self.idempotency_retention_days,
        )
