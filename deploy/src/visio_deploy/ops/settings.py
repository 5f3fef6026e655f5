"""Settings of the ops commands: the same Kafka settings as the services
(bootstrap servers, TLS, SASL — read from `VISIO_KAFKA_*`), an owner connection to PostgreSQL,
and the periods after which personal data ends. The commands take what no setting gives from
the stack `visio-rdv up` runs in this checkout (visio_runtime.local_stack)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict
from visio_alerts.settings import email_late_after_minutes
from visio_runtime import production
from visio_runtime.local_stack import (
    Part,
    announce,
    database_part,
    fill_from_stack,
    find_local_stack,
    kafka_part,
    sources_of,
)
from visio_runtime.production import Finding
from visio_runtime.settings import ServiceSettings


class OpsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="VISIO_", extra="ignore", populate_by_name=True)

    # An owner connection: ops reads (and purges) every service's schema.
    database_url: SecretStr = Field(
        default=SecretStr("postgresql://127.0.0.1:5432/visio"),
        validation_alias=AliasChoices("VISIO_DATABASE_URL", "DATABASE_URL"),
    )

    # `ops appointments --stuck`: still waiting for an email this long after it was owed (the
    # alerts service's threshold, read by both under the same name).
    email_late_after_minutes: float = email_late_after_minutes()

    # Retention of personal data (docs/personal-data.md). Periods run from the
    # appointment's end, or from when the row was written for rows with no appointment time.
    appointment_retention_days: float = 90.0
    outbox_retention_days: float = 7.0
    mail_retention_days: float = 7.0
    mail_dir: Path = Path("var/mail")

    # `ops heal` (visio_deploy.ops.heal): replaying what an outage dead-lettered, within bounds.
    heal_probes: dict[str, str] = Field(
        default_factory=dict,
        description="Dependency -> how to tell it answers: an HTTP(S) URL (up below 500) or "
        'smtp://host:port (up on a 220 greeting), e.g. {"graph": '
        '"https://graph.microsoft.com/v1.0/", "smtp": "smtp://relay:25"}.',
    )
    heal_ca_bundle: Path | None = Field(
        default=None, description="CA bundle for the HTTPS probes (unset: the system's)."
    )
    heal_probe_timeout_s: float = Field(default=5.0, gt=0)
    heal_interval_s: float = Field(default=30.0, gt=0, description="Seconds between rounds.")
    heal_backoff_s: float = Field(
        default=60.0,
        ge=0,
        description="Wait after a letter is written before its replay; doubled at each "
        "automatic replay of the same record.",
    )
    heal_backoff_max_s: float = Field(default=3600.0, ge=0)
    heal_max_replays: int = Field(
        default=5, ge=0, description="Automatic replays of one record; then an operator's."
    )
    heal_max_per_hour: int = Field(
        default=500, ge=0, description="Automatic replays an hour, all letters together."
    )

    def production_findings(self) -> list[Finding]:
        """A service's own role must have its own secret; ops' connection is the owner's, given
        by the operator for the commands that use a database (often a local socket with peer
        authentication, no password at all), and most commands (lag, tail, the lag exporter)
        use none: it is not held to the services' rule."""
        database = production.env_name(self, "database_url")
        return [f for f in super().production_findings() if f.setting != database]


def ops_settings(uses: Iterable[str]) -> OpsSettings:
    """The settings an ops command runs with: the environment's, with the running local stack
    (var/stack.json) filling what it leaves unset; says on stderr which stack that is, naming
    the parts the command `uses` ('kafka', 'database', 'mail')."""
    lookup = find_local_stack()
    settings, filled = fill_from_stack(
        OpsSettings(), lookup, database_url="database_url", mail_dir="mail_dir"
    )
    (database_source,) = sources_of(settings, filled, "database_url")
    parts = {
        "kafka": kafka_part(settings, filled),
        "database": database_part(
            settings.database_url.get_secret_value(), database_source, lookup
        ),
        "mail": Part(f"mail sink {settings.mail_dir}", sources_of(settings, filled, "mail_dir")),
    }
    announce(lookup, [parts[name] for name in uses])
    return settings
