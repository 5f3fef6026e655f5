"""Settings of the notifications service, read from `NOTIFICATIONS_*` environment variables."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict
from visio_runtime.settings import ServiceSettings

TEAMS_JOIN_URL_PREFIXES = (
    "https://teams.microsoft.com/l/meetup-join/",
    "https://teams.microsoft.com/meet/",
)


class NotificationsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFICATIONS_", extra="ignore")

    http_port: int = 8082
    database_url: SecretStr = SecretStr(
        "postgresql://visio_notifications:visio_notifications@127.0.0.1:5432/visio"
    )

    # SMTP relay (the local sink by default)
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_timeout_s: float = 30.0

    # What the emails say about themselves
    mail_from: str = "Caf - Visio RDV <visio-rdv@caf.fr>"
    message_id_domain: str = "visio-rdv.caf.fr"
    cgu_url: str = "https://www.caf.fr/visio-rdv/cgu"

    # A join URL goes into a link only if it starts with one of these.
    teams_url_allowlist: list[str] = Field(default_factory=lambda: list(TEAMS_JOIN_URL_PREFIXES))

    # Where to get Microsoft Teams (guide, step 01)
    app_store_url: str = "https://apps.apple.com/fr/app/microsoft-teams/id1113153706"
    google_play_url: str = "https://play.google.com/store/apps/details?id=com.microsoft.teams"
