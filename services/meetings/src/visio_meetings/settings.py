"""Settings of the meetings service (env prefix `MEETINGS_`).

Microsoft Graph and Entra ID are reached over HTTPS only: msal refuses plain-HTTP authorities
anyway, and a bearer token must never travel in clear, so start-up refuses anything else.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import SettingsConfigDict
from visio_runtime import production
from visio_runtime.production import Finding
from visio_runtime.settings import ServiceSettings

from visio_meetings.payloads import LOCAL_BOOKING_URL


class MeetingsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MEETINGS_", extra="ignore", env_file=None)

    http_port: int = 8081
    database_url: SecretStr = SecretStr(
        "postgresql://visio_meetings:visio_meetings@127.0.0.1:5432/visio"
    )
    # A handling keeps its connection (and the appointment's lock) across its Graph calls, so
    # the pool, not the consumer, would bound how many appointments are in the making at once.
    database_pool_max: int = 20
    # A batch of new meetings spends nearly all its time waiting for Graph (four steps, a round
    # of Graph's latency each): more batches in flight cost no CPU, and two made about 58
    # meetings/s at most against a Graph answering in 0.1 s. Each holds one connection.
    consumer_batch_parallel: int = Field(
        default=6,
        ge=1,
        description="Batches of new meetings in the making at once (each waits on Graph).",
    )

    # Microsoft Graph
    graph_base_url: str = "https://graph.microsoft.com/v1.0"
    graph_scope: str = "https://graph.microsoft.com/.default"
    graph_timeout_s: float = 15.0

    # Entra ID (client credentials): one tenant, one app registration. No defaults: a service
    # that silently asks the wrong tenant for tokens is worse than one that refuses to start.
    authority: str  # https://login.microsoftonline.com/<tenant id>
    client_id: str
    client_secret: SecretStr | None = None
    # Certificate credential, instead of a secret: a PEM file holding the private key (and,
    # ideally, the certificate, from which msal computes the thumbprint), or a .pfx file.
    client_certificate_path: Path | None = None
    client_certificate_thumbprint: str | None = None
    client_certificate_passphrase: SecretStr | None = None
    # A CA bundle for the emulator or a corporate proxy; it replaces the default trust store,
    # so for a proxy it must hold the public roots too.
    ca_bundle: Path | None = None
    # Outbound proxy for Entra ID and Graph. Explicit, because both clients ignore the
    # environment (HTTPS_PROXY, REQUESTS_CA_BUNDLE …): only these settings decide.
    proxy_url: str | None = None
    # A cached token must stay valid at least this long to be used for a Graph call.
    token_refresh_margin_s: int = 300

    # Graph's transient answers (429, 503, 504, timeouts): a few short waits in process, each
    # honouring Retry-After or else growing exponentially with jitter; a longer wait, or one
    # failure too many, goes back to the consumer as Transient (it retries the event later).
    graph_attempts: int = Field(default=4, ge=1)
    graph_backoff_initial_s: float = Field(default=0.5, ge=0)
    graph_backoff_max_s: float = Field(default=8.0, ge=0)
    graph_max_in_process_wait_s: float = Field(default=5.0, ge=0)
    # Outlook serves at most 4 concurrent requests per mailbox and application (more are
    # answered 429 ApplicationThrottled): requests to one advisor queue here, others proceed.
    graph_max_concurrent_per_mailbox: int = Field(default=4, ge=1)
    # Connections to Graph, all kept alive between requests (a new one costs a TLS handshake).
    # Not more than the batches in flight need: httpx's pool looks at every connection it
    # keeps twice per request (with anyio's backend, a tenth of meetings' CPU with 100).
    graph_max_connections: int = Field(default=16, ge=1)
    # Meetings being made at once wait this long for others to share their Graph batches
    # (see `provisioning`): a few milliseconds against Graph's hundreds.
    graph_batch_window_s: float = Field(default=0.005, ge=0)

    # The record of connections: Teams makes a meeting's attendance report some minutes after
    # it ends, so it is first asked for at the end plus this grace, then again every retry
    # interval while Graph lists none; after the last attempt, MeetingAttendanceUnavailable.
    attendance_grace_s: float = Field(default=900, ge=0)
    attendance_retry_interval_s: float = Field(default=900, gt=0)
    attendance_max_attempts: int = Field(default=12, ge=1)  # 3 h at the defaults
    attendance_poll_interval_s: float = Field(default=60, gt=0)

    # The advisor's Outlook event links to their page of the appointment in booking.
    booking_public_url: str = Field(
        default=LOCAL_BOOKING_URL,
        description="Booking's public address: each advisor's Outlook event links to "
        "<this>/conseiller/rendez-vous/<appointment id>, where they say how it went.",
    )

    @field_validator("graph_base_url", "authority")
    @classmethod
    def _https_only(cls, value: str, info: ValidationInfo) -> str:
        name = info.field_name or "url"
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(
                f"MEETINGS_{name.upper()} must be an https:// URL (got {value!r}): tokens and "
                "Graph requests never travel in clear, and msal refuses http:// authorities"
            )
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_credential(self) -> MeetingsSettings:
        if self.client_secret is not None and self.client_certificate_path is not None:
            raise ValueError(
                "set MEETINGS_CLIENT_SECRET or MEETINGS_CLIENT_CERTIFICATE_PATH, not both"
            )
        return self

    def production_findings(self) -> list[Finding]:
        findings = [
            finding
            for finding in super().production_findings()
            # The outbound proxy is reached over http:// and tunnels TLS (CONNECT).
            if finding.setting != production.env_name(self, "proxy_url")
        ]
        if self.client_secret is not None and production.is_development_secret(
            self.client_secret.get_secret_value()
        ):
            findings.append(
                Finding(production.env_name(self, "client_secret"), "a development secret")
            )
        return findings

    @property
    def tenant_id(self) -> str:
        """The tenant of the authority URL: attendees from it are colleagues, not the public."""
        return urlsplit(self.authority).path.strip("/").split("/")[0]

    def client_credential(self) -> str | dict[str, str]:
        """What msal's `client_credential` wants: the secret, or a certificate dict."""
        if self.client_certificate_path is not None:
            path = self.client_certificate_path
            credential: dict[str, str] = {}
            if self.client_certificate_passphrase is not None:
                credential["passphrase"] = self.client_certificate_passphrase.get_secret_value()
            if path.suffix.lower() in (".pfx", ".p12"):
                credential["private_key_pfx_path"] = str(path)
                return credential
            pem = path.read_text(encoding="utf-8")
            credential["private_key"] = pem
            if self.client_certificate_thumbprint:
                credential["thumbprint"] = self.client_certificate_thumbprint
            elif "BEGIN CERTIFICATE" in pem:
                # msal computes the SHA-256 thumbprint from it and sends it as x5c.
                credential["public_certificate"] = pem
            else:
                raise ValueError(
                    f"{path} holds no certificate: set MEETINGS_CLIENT_CERTIFICATE_THUMBPRINT"
                )
            return credential
        if self.client_secret is None:
            raise ValueError(
                "no Entra ID credential: set MEETINGS_CLIENT_SECRET or "
                "MEETINGS_CLIENT_CERTIFICATE_PATH"
            )
        return self.client_secret.get_secret_value()
