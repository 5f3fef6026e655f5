from __future__ import annotations

from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict
from visio_runtime import guide, production
from visio_runtime.caf_settings import CafSettings
from visio_runtime.production import Finding
from visio_runtime.settings import LinkSettings, ServiceSettings
from visio_runtime.teams import TEAMS_JOIN_URL_PREFIXES
from visio_shared.links import KeyPurpose
from visio_shared.topics import check_partner_name

from visio_booking.outbox import RelaySettings

# The local stack's Graph + Entra ID emulator (visio_fakes.graph_emulator.settings: its tenant
# and its advisors' sign-in registration), which production refuses.
DEV_SIGN_IN_AUTHORITY = "https://localhost:8443/00000000-0000-0000-0000-0000000000ca"
DEV_SIGN_IN_CLIENT_ID = "22222222-2222-2222-2222-222222222222"
DEV_SIGN_IN_CLIENT_SECRET = "dev-only-advisor-sign-in"  # noqa: S105 - the emulator's

# Above the producer's own delivery timeout (request.timeout.ms, 40 s), see below.
_MIN_PUBLISH_TIMEOUT_S = 45.0


class BookingSettings(ServiceSettings, LinkSettings, CafSettings):
    model_config = SettingsConfigDict(env_prefix="BOOKING_", extra="ignore")

    # « Mon rendez-vous » and its forms; the consent pages' links too, read (never signed) by
    # « Recevoir un nouveau lien » to know which appointment a refused link was for. Booking
    # holds the person's data and cancels anyway: those keys give it nothing more.
    LINK_PURPOSES: ClassVar[frozenset[KeyPurpose]] = frozenset(KeyPurpose)

    http_port: int = 8080
    database_url: SecretStr = SecretStr(
        "postgresql://visio_booking:visio_booking@127.0.0.1:5432/visio"
    )

    booking_horizon_days: int = 180
    min_duration_minutes: int = 10
    max_duration_minutes: int = 120
    max_body_bytes: int = 64 * 1024
    consent_public_url: str = Field(
        default="http://127.0.0.1:8083",
        description="Consent's public address: each CGU version is read at <this>/cgu/<version>.",
    )

    # Partner systems on Kafka (docs/partners.md). Each writes its own topic and reads its own;
    # booking creates both at start. Adding one is configuration, never code.
    partners: list[str] = Field(
        default_factory=list,
        description='Partner systems on Kafka, JSON list (["caf-portal", "national-scheduler"]): '
        "each gets booking-requests.<name>.v1 and booking-replies.<name>.v1.",
    )
    # The shared booking-requests.v1, where the caller is whatever the message says: read only
    # for a deprecation window, while partners move to their own topics (docs/partners.md).
    shared_requests_topic: bool = Field(
        default=False,
        description="Also read the deprecated shared booking-requests.v1 (answered on "
        "booking-replies.v1, each message counted in booking_shared_topic_requests_total).",
    )

    # « Mon rendez-vous » (needs `link_keys`; unset, its pages answer 404).
    booking_portal_url: str | None = Field(
        default=None,
        description="Where to take a new appointment, for a Caf not in booking_portal_urls; "
        "unset, the Caf directory's portal (caf.fr's).",
    )
    booking_portal_urls: dict[str, str] = Field(
        default_factory=dict,
        description='Each Caf\'s own booking portal, by caf_code (JSON: {"974": "https://…"}).',
    )
    resend_interval_s: int = Field(
        default=600,
        ge=1,
        description="At most one email with the links per appointment in this time, whether "
        "asked from its page or for a fresh link.",
    )
    link_attempts_per_hour: int = Field(
        default=30, ge=1, description="Requests on one link (pages and forms), per hour."
    )
    short_link_attempts_per_hour: int = Field(
        default=60,
        ge=1,
        description="Short links (/r/<code>, in text messages) opened from one client address, "
        "per hour: enough for a household, too few to guess codes.",
    )
    link_valid_days_after_appointment: int = Field(
        default=30,
        ge=0,
        description="A short link stops working this many days after the appointment's end: "
        "keep it equal to NOTIFICATIONS_LINK_VALID_DAYS_AFTER_APPOINTMENT.",
    )
    contact_correction_valid_hours: int = Field(
        default=24,
        ge=1,
        description="A new address typed on « Mon rendez-vous » is confirmed by the link sent "
        "to it, within this time; until then the current address stays.",
    )
    fresh_link_emails_per_hour: int = Field(
        default=3, ge=1, description="Fresh-link requests for one email address, per hour."
    )
    # Only a Teams join URL is shown as a link (visio_runtime.teams: the emails' rule too).
    teams_url_allowlist: list[str] = Field(default_factory=lambda: list(TEAMS_JOIN_URL_PREFIXES))
    app_store_url: str = guide.APP_STORE_URL
    google_play_url: str = guide.GOOGLE_PLAY_URL

    # The advisor's page (/conseiller/rendez-vous/<id>): advisors sign in with Entra ID
    # (OpenID Connect, authorisation code with PKCE through msal), docs/microsoft-365.md. The
    # defaults are the local stack's Graph + Entra ID emulator: production refuses them.
    advisor_authority: str = Field(
        default=DEV_SIGN_IN_AUTHORITY,
        description="Entra ID authority the advisors sign in with: "
        "https://login.microsoftonline.com/<tenant id>.",
    )
    advisor_client_id: str = Field(
        default=DEV_SIGN_IN_CLIENT_ID,
        description="The web app registration's application (client) id.",
    )
    advisor_client_secret: SecretStr = Field(
        default=SecretStr(DEV_SIGN_IN_CLIENT_SECRET),
        description="That registration's client secret (the code is redeemed server-side).",
    )
    advisor_redirect_uri: str = Field(
        default="http://127.0.0.1:8080/conseiller/connexion",
        description="The redirect URI registered for it: booking's public "
        "https://…/conseiller/connexion. Its scheme decides the cookies' Secure flag.",
    )
    advisor_ca_bundle: Path | None = Field(
        default=None, description="CA bundle to reach the authority (the emulator's dev CA)."
    )
    advisor_session_key: SecretStr = Field(
        default=SecretStr("dev-only-advisor-session-key"),
        description="Signs the advisor's session cookie and its forms' CSRF tokens (32+ "
        "random bytes).",
    )
    advisor_session_hours: int = Field(
        default=8, ge=1, le=24, description="How long an advisor stays signed in."
    )
    outbox_batch_size: int = 200
    outbox_poll_interval_s: float = 0.5
    outbox_standby_interval_s: float = 1.0
    # Above the producer's own delivery timeout (request_timeout_ms, 40 s): the producer, not
    # this bound, normally decides that a message failed, so a retry is never a duplicate of a
    # message still buffered. Lower it only to see outages sooner (tests).
    outbox_publish_timeout_s: float = 60.0
    outbox_retention_hours: int = 168
    idempotency_retention_days: int = 30

    def production_findings(self) -> list[Finding]:
        findings = super().production_findings()
        if self.outbox_publish_timeout_s < _MIN_PUBLISH_TIMEOUT_S:
            findings.append(
                Finding(
                    production.env_name(self, "outbox_publish_timeout_s"),
                    f"{self.outbox_publish_timeout_s} s is a setting for tests: below the "
                    "producer's own delivery timeout a retry may duplicate a buffered message",
                )
            )
        return findings + self._sign_in_findings()

    def _sign_in_findings(self) -> list[Finding]:
        found: list[Finding] = []
        authority = urlsplit(self.advisor_authority)
        if authority.scheme != "https" or self.advisor_authority == DEV_SIGN_IN_AUTHORITY:
            found.append(
                Finding(
                    production.env_name(self, "advisor_authority"),
                    "the local emulator: advisors must sign in with the Caf's Entra ID tenant",
                )
            )
        if self.advisor_client_id == DEV_SIGN_IN_CLIENT_ID:
            found.append(
                Finding(
                    production.env_name(self, "advisor_client_id"),
                    "the emulator's app registration",
                )
            )
        for field in ("advisor_client_secret", "advisor_session_key"):
            secret: SecretStr = getattr(self, field)
            if production.is_development_secret(secret.get_secret_value()):
                found.append(Finding(production.env_name(self, field), "a development secret"))
        if urlsplit(self.advisor_redirect_uri).scheme != "https":
            found.append(
                Finding(
                    production.env_name(self, "advisor_redirect_uri"),
                    f"{self.advisor_redirect_uri!r}: booking's public https:// address "
                    "is needed (the session cookie is Secure only then)",
                )
            )
        return found

    @field_validator("partners")
    @classmethod
    def _partner_names(cls, partners: list[str]) -> list[str]:
        for name in partners:
            check_partner_name(name)
        if len(set(partners)) != len(partners):
            raise ValueError("a partner is declared twice")
        return partners

    def relay(self) -> RelaySettings:
        return RelaySettings(
            batch_size=self.outbox_batch_size,
            poll_interval_s=self.outbox_poll_interval_s,
            standby_interval_s=self.outbox_standby_interval_s,
            publish_timeout_s=self.outbox_publish_timeout_s,
            outbox_retention_hours=self.outbox_retention_hours,
            idempotency_retention_days=self.idempotency_retention_days,
        )

    def booking_portal(self, caf_code: str) -> str:
        given = self.booking_portal_urls.get(caf_code, self.booking_portal_url)
        return given or self.cafs().get(caf_code).booking_portal_url

    def cgu_url(self, version: str) -> str:
        """Where the CGU version a person accepted is published (consent's /cgu/<version>)."""
        return f"{self.consent_public_url.rstrip('/')}/cgu/{version}"
