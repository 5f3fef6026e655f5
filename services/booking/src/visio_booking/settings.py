from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict
from visio_runtime.settings import ServiceSettings


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

    outbox_batch_size: int = 200
    outbox_poll_interval_s: float = 0.5
