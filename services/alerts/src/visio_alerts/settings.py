"""What the alerts service reads from `ALERTS_*` (and the one threshold every process reads as
VISIO_EMAIL_LATE_AFTER_MINUTES, whatever its own prefix)."""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict
from visio_runtime import production
from visio_runtime.production import Finding
from visio_runtime.settings import ServiceSettings

from visio_alerts.store import SCHEMA

EMAIL_LATE_ENV = "VISIO_EMAIL_LATE_AFTER_MINUTES"


def email_late_after_minutes() -> Any:
    """The one threshold past which a person's email is late: the alerts process alerts the Caf
    and counts them (`visio_people_waiting_for_an_email_past_threshold`), `ops appointments
    --stuck` lists them. Read as VISIO_EMAIL_LATE_AFTER_MINUTES by every process that uses it,
    whatever its own prefix. The default is the promise of docs/guarantees.md."""
    return Field(
        default=10.0,
        ge=0,
        validation_alias=EMAIL_LATE_ENV,  # by name too, in code (populate_by_name)
        description="Minutes after which a person still waiting for an email (confirmation, "
        "update, cancellation, the link again) is reported; 0: never.",
    )


class AlertsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ALERTS_", extra="ignore", populate_by_name=True)

    http_port: int = 8084
    # An owner connection, for the migration at start; the process then logs in as its role.
    owner_database_url: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "ALERTS_OWNER_DATABASE_URL", "VISIO_DATABASE_URL", "DATABASE_URL"
        ),
    )
    database_url: SecretStr = SecretStr(
        "postgresql://visio_alerts:visio_alerts@127.0.0.1:5432/visio"
    )
    database_password: SecretStr = SecretStr("visio_alerts")  # the development value

    # Where alerts go: each Caf's team (`{"974": "visio@caf974.fr"}`), else the default.
    team_addresses: dict[str, str] = Field(default_factory=dict)
    default_team_address: str = "visio-rdv-exploitation@caf.fr"
    mail_from: str = "Visio RDV - alertes <visio-rdv-alertes@caf.fr>"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_s: float = 30.0

    email_late_after_minutes: float = email_late_after_minutes()
    scan_interval_s: float = 30.0
    # An alert whose appointment copy has not come by then goes out without it.
    orphan_after_minutes: float = 10.0

    def production_findings(self) -> list[Finding]:
        # database_url is built from the owner's and database_password at start (`prepare`).
        findings = [
            finding
            for finding in super().production_findings()
            if finding.setting != production.env_name(self, "database_url")
        ]
        password = self.database_password.get_secret_value()
        if password == SCHEMA.service_role or production.is_development_secret(password):
            findings.append(
                Finding(production.env_name(self, "database_password"), "the development one")
            )
        if not self.smtp_starttls:
            findings.append(
                Finding(
                    production.env_name(self, "smtp_starttls"),
                    "SMTP without TLS: alerts name appointments and Cafs; set it true",
                )
            )
        return findings

    def team_address(self, caf_code: str | None) -> str:
        return self.team_addresses.get(caf_code or "", self.default_team_address)
