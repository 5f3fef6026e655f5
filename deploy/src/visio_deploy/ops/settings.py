"""Settings of the ops commands and the alerts process: the same Kafka settings as the services
(bootstrap servers, TLS, SASL — read from `VISIO_KAFKA_*`), an owner connection to PostgreSQL,
and the periods after which personal data ends."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict
from visio_runtime.settings import ServiceSettings


class OpsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="VISIO_", extra="ignore", populate_by_name=True)

    # An owner connection: ops reads (and purges) every service's schema.
    database_url: SecretStr = Field(
        default=SecretStr("postgresql://127.0.0.1:5432/visio"),
        validation_alias=AliasChoices("VISIO_DATABASE_URL", "DATABASE_URL"),
    )

    # `ops appointments --stuck`: not confirmed this long after it was booked.
    stuck_after_minutes: float = 30.0

    # Retention of personal data (README "Données personnelles"). Periods run from the
    # appointment's end, or from when the row was written for rows with no appointment time.
    appointment_retention_days: float = 90.0
    outbox_retention_days: float = 7.0
    mail_retention_days: float = 7.0
    mail_dir: Path = Path("var/mail")
