"""Settings of the notifications service, read from `NOTIFICATIONS_*` environment variables."""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import EmailStr, Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict
from visio_runtime import guide, production
from visio_runtime.caf_settings import CafSettings
from visio_runtime.production import Finding
from visio_runtime.settings import LinkSettings, ServiceSettings
from visio_runtime.teams import TEAMS_JOIN_URL_PREFIXES
from visio_shared.links import KeyPurpose

DEV_SMS_RECEIPT_TOKEN = "dev-sms-receipts"  # noqa: S105 - development only, refused in production
DEV_BOUNCE_TOKEN = "dev-bounces"  # noqa: S105 - development only, refused in production

# A page's public address goes into emails as is: only characters that never need escaping.
_PLAIN_URL = re.compile(r"[A-Za-z0-9\-._~:/%]+")


class NotificationsSettings(ServiceSettings, LinkSettings, CafSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFICATIONS_", extra="ignore")

    # Signs the three pages' links; never booking's address form.
    LINK_PURPOSES: ClassVar[frozenset[KeyPurpose]] = frozenset(
        {KeyPurpose.MANAGE, KeyPurpose.RECORDING, KeyPurpose.CONSENTS}
    )

    http_port: int = 8082
    database_url: SecretStr = SecretStr(
        "postgresql://visio_notifications:visio_notifications@127.0.0.1:5432/visio"
    )

    # SMTP relay (the local sink by default). `smtp_tls` is TLS from the first byte (port 465);
    # `smtp_starttls` upgrades a plain connection (port 587) and fails if the relay cannot.
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_tls: bool = False
    smtp_starttls: bool = False
    smtp_ca_file: Path | None = None
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_allow_auth_without_tls: bool = False
    smtp_timeout_s: float = 30.0
    smtp_max_connections: int = Field(
        default=4,
        ge=1,
        description="Emails in flight at once, each on a kept connection of its own: at most "
        "what the relay allows one client (relays answer 421 past their limit). Each email "
        "waits for three answers (MAIL, RCPT, DATA), so a busy relay's latency can bound the "
        "rate: more helps only if the relay takes them.",
    )
    smtp_idle_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="SMTP connections are kept and reused; one unused this long is closed "
        "(QUIT). Relays drop idle clients after a few minutes (RFC 5321 asks them to wait 5).",
    )
    smtp_messages_per_connection: int = Field(
        default=1000,
        ge=1,
        description="A kept SMTP connection is closed (QUIT) after this many messages, and the "
        "next message opens a new one: some relays cap the messages of a session.",
    )
    mail_sink_dir: Path | None = Field(
        default=None,
        description="The local SMTP sink's store (`visio-rdv up` sets it): an erasure also "
        "deletes the appointment's emails there. Unset with a real relay, whose copies are "
        "the relay's to expire.",
    )

    # A message the relay could not take now is tried again after a growing delay, capped:
    # every email here is time-critical (the confirmation, an update, a cancellation, the link
    # asked for again, a reminder). With 15 s doubling to 60 s and a round every 10 s, an email
    # that meets eight relay faults in a row is still sent within 8 minutes of its first try:
    # the promise of docs/guarantees.md is 10, which is also the default of
    # VISIO_EMAIL_LATE_AFTER_MINUTES, past which the Caf is alerted.
    mail_retry_initial_s: float = Field(default=15.0, gt=0)
    mail_retry_max_s: float = Field(
        default=60.0,
        gt=0,
        description="At most this long between two tries of an email the relay did not take. "
        "A longer cap spares a relay in trouble but makes people wait: past "
        "VISIO_EMAIL_LATE_AFTER_MINUTES without their email, the Caf is alerted.",
    )

    # What the emails say about themselves
    mail_from: str = "Caf - Visio RDV <visio-rdv@caf.fr>"
    reply_to: str | None = Field(
        default=None,
        description="Where a person's reply goes (a monitored Caf mailbox); unset, the emails "
        "ask not to reply.",
    )
    message_id_domain: str = "visio-rdv.caf.fr"
    new_appointment_url: str = "https://www.caf.fr/allocataires/mon-rendez-vous"
    logo_url: str | None = None

    # A join URL goes into a link only if it starts with one of these.
    teams_url_allowlist: list[str] = Field(default_factory=lambda: list(TEAMS_JOIN_URL_PREFIXES))

    # Where to get Microsoft Teams (guide, step 01)
    app_store_url: str = guide.APP_STORE_URL
    google_play_url: str = guide.GOOGLE_PLAY_URL

    # The self-service pages every email links to (`link_keys`, from LinkSettings, signs the
    # links; unset, the emails carry none): booking serves « Mon rendez-vous », consent
    # « Enregistrement » and « Mes consentements ».
    booking_public_url: str = "http://127.0.0.1:8080"
    consent_public_url: str = "http://127.0.0.1:8083"
    link_valid_days_after_appointment: int = Field(
        default=30,
        ge=0,
        description="A link in an email stops working this many days after the appointment's end.",
    )

    # The Caf's team, told when a person asks to move an appointment booked over HTTP
    # (visio_notifications.team_requests): the Caf's own `team_address` in caf_contacts, else
    # this one; neither, and the request is logged and counted, never mailed to a guess.
    caf_team_address: EmailStr | None = Field(
        default=None,
        description="The Caf teams' address when a Caf's entry in caf_contacts gives none "
        "(requests to move an appointment booked over HTTP). Unset: such a request is logged "
        'as a warning and counted (visio_team_requests_total{outcome="no_address"}).',
    )

    # Reminders: minutes before the start (default 48 h and 1 h), and how often the poller
    # looks for what is due (reminders, and emails the relay could not take earlier: a round
    # is a few indexed queries, and a retry waits at most this much past its time).
    reminder_offsets_minutes: list[int] = Field(default_factory=lambda: [48 * 60, 60])
    poll_interval_s: float = Field(default=10.0, gt=0)
    settle_handover_s: float = Field(
        default=30.0,
        ge=0,
        description="How long the poller leaves an appointment whose event is being handled "
        "to that handler before settling it itself (a handler that stopped between its two "
        "transactions; the event's redelivery usually finishes it first): the poller never "
        "takes an email its handler is about to send, in a trace of its own.",
    )

    # Text messages (docs/sms.md). `sms_provider`: "brevo" (its API, or the emulator in the
    # local stack) or "none" (no text is planned). The sender is what the phone shows.
    sms_provider: Literal["none", "brevo"] = "none"
    sms_api_url: str = Field(
        default="https://api.brevo.com/v3",
        description="The SMS provider's API base URL (Brevo's; the emulator's locally).",
    )
    sms_api_key: SecretStr | None = None
    sms_ca_file: Path | None = None
    sms_sender: str = Field(
        default="Caf", pattern=r"^[A-Za-z0-9]{3,11}$", description="3 to 11 letters or digits."
    )
    sms_timeout_s: float = Field(default=10.0, gt=0)
    sms_receipt_url: str | None = Field(
        default=None,
        description="This service's public address for the provider's delivery receipts "
        "(https://…/v1/sms/receipts); unset, the provider is not asked for them.",
    )
    sms_receipt_token: SecretStr = Field(
        default=SecretStr(DEV_SMS_RECEIPT_TOKEN),
        description="The secret last part of the receipts' address: only the provider, told "
        "the whole address, can post receipts. The default is for development only.",
    )
    sms_quiet_start_hour: int = Field(default=20, ge=0, le=23)
    sms_quiet_end_hour: int = Field(default=8, ge=0, le=23)
    sms_urgent_reminder_minutes: int = Field(
        default=120,
        ge=0,
        description="A reminder of an appointment this close goes even in the quiet hours.",
    )
    sms_urgent_change_minutes: int = Field(
        default=12 * 60,
        ge=0,
        description="A change or cancellation notice of an appointment this close goes even "
        "in the quiet hours.",
    )
    sms_retry_initial_s: float = Field(default=15.0, gt=0)
    sms_retry_max_s: float = Field(default=120.0, gt=0)

    # Bounces (docs/sms.md): each email's envelope sender is bounce+<tag>@<bounce_domain>, and
    # the relay hands the DSNs that come back there to POST /v1/bounces/<bounce_token>.
    bounce_domain: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9.-]+$",
        description="The domain of the bounce addresses (bounce+<tag>@this domain), which the "
        "relay delivers to this service; unset, emails carry the From address as envelope "
        "sender and bounces are not read.",
    )
    bounce_token: SecretStr = Field(
        default=SecretStr(DEV_BOUNCE_TOKEN),
        description="The secret last part of the address the relay posts DSNs to. The default "
        "is for development only.",
    )

    # Personal data (names, addresses) is kept this long after the appointment, then deleted;
    # the dispatch log, which holds none, stays as the record of what was sent.
    retention_days: float = Field(default=90, gt=0)

    def production_findings(self) -> list[Finding]:
        findings = super().production_findings()
        if not (self.smtp_tls or self.smtp_starttls):
            findings.append(
                Finding(
                    production.env_name(self, "smtp_starttls"),
                    "SMTP without TLS: every email (names, addresses, links that open the "
                    "person's pages) would cross the network in clear; set "
                    "NOTIFICATIONS_SMTP_STARTTLS or NOTIFICATIONS_SMTP_TLS",
                )
            )
        if self.sms_provider != "none":
            if self.sms_api_url.startswith("http://"):
                findings.append(
                    Finding(
                        production.env_name(self, "sms_api_url"),
                        "the SMS provider in clear: numbers and texts would cross the network "
                        "unencrypted; use its https:// address",
                    )
                )
            if self.sms_receipt_token.get_secret_value() == DEV_SMS_RECEIPT_TOKEN:
                findings.append(
                    Finding(
                        production.env_name(self, "sms_receipt_token"),
                        "the development token of the SMS receipts' address: anyone could post "
                        "receipts; set a random one",
                    )
                )
        if (
            self.bounce_domain is not None
            and self.bounce_token.get_secret_value() == DEV_BOUNCE_TOKEN
        ):
            findings.append(
                Finding(
                    production.env_name(self, "bounce_token"),
                    "the development token of the bounces' address: anyone could fail "
                    "dispatches with forged DSNs; set a random one",
                )
            )
        findings += production.switch_findings(
            self,
            {"smtp_allow_auth_without_tls": True},
            "a switch for tests: the relay's password would travel in clear",
        )
        return findings

    @field_validator("booking_public_url", "consent_public_url")
    @classmethod
    def _plain_public_url(cls, value: str) -> str:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a port that is not one
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.username is not None
            or parts.query
            or parts.fragment
            or not _PLAIN_URL.fullmatch(value)
        ):
            raise ValueError(
                "a public URL is http(s)://host[:port][/path]: no credentials, query or "
                "fragment, and no character that would need escaping"
            )
        return value.rstrip("/")

    @model_validator(mode="after")
    def _refuse_credentials_in_clear(self) -> NotificationsSettings:
        in_clear = not (self.smtp_tls or self.smtp_starttls)
        if self.smtp_username and in_clear and not self.smtp_allow_auth_without_tls:
            raise ValueError(
                "NOTIFICATIONS_SMTP_USERNAME without TLS sends the password in clear; set "
                "NOTIFICATIONS_SMTP_STARTTLS or NOTIFICATIONS_SMTP_TLS, or "
                "NOTIFICATIONS_SMTP_ALLOW_AUTH_WITHOUT_TLS=true deliberately"
            )
        if self.smtp_tls and self.smtp_starttls:
            raise ValueError("choose NOTIFICATIONS_SMTP_TLS or NOTIFICATIONS_SMTP_STARTTLS")
        if self.sms_provider != "none" and self.sms_api_key is None:
            raise ValueError("NOTIFICATIONS_SMS_PROVIDER needs NOTIFICATIONS_SMS_API_KEY")
        if any(offset <= 0 for offset in self.reminder_offsets_minutes):
            raise ValueError("reminder offsets are minutes before the start: positive numbers")
        return self
