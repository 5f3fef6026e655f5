"""Settings of the Graph + Entra ID emulator (environment prefix `GRAPH_EMULATOR_`)."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from visio_fakes.graph_emulator.faults import FaultConfig

DEFAULT_TENANT_ID = "00000000-0000-0000-0000-0000000000ca"
DEFAULT_CLIENT_ID = "11111111-1111-1111-1111-111111111111"
DEFAULT_CLIENT_SECRET = "dev-secret"  # noqa: S105 - a well-known development value
DEFAULT_SIGN_IN_CLIENT_ID = "22222222-2222-2222-2222-222222222222"
DEFAULT_SIGN_IN_CLIENT_SECRET = "dev-only-advisor-sign-in"  # noqa: S105 - development value
# Application permissions our meetings service needs; a registration without one of them
# gets Graph's 403, as a tenant that forgot an admin consent would.
DEFAULT_APP_ROLES = (
    "Calendars.ReadWrite",
    "OnlineMeetings.ReadWrite.All",
    "OnlineMeetingArtifact.Read.All",  # attendance reports
    "OnlineMeetingRecording.Read.All",  # recordings' metadata
)


class AppRegistration(BaseModel):
    """An Entra application registration allowed to use the client-credentials flow."""

    client_id: str
    display_name: str = "Visio RDV"
    client_secret: str | None = None
    certificate_pem: str | None = Field(
        default=None,
        description="PEM certificate whose key signs client assertions. When absent, a "
        "client assertion's claims are still checked but its signature is not.",
    )
    roles: list[str] = Field(default_factory=lambda: list(DEFAULT_APP_ROLES))
    redirect_uris: list[str] = Field(
        default_factory=list,
        description="Where a user's sign-in may send its code back (signin.py); empty: "
        "anywhere, as a development registration.",
    )


class EmulatorSettings(BaseSettings):
    # GRAPH_EMULATOR_FAULTS__THROTTLE_RATE=0.1 (or GRAPH_EMULATOR_FAULTS as JSON) sets a fault.
    model_config = SettingsConfigDict(
        env_prefix="GRAPH_EMULATOR_", extra="ignore", env_nested_delimiter="__"
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8443, ge=0, le=65535, description="0 picks a free port.")
    base_url: str | None = Field(
        default=None,
        description="Public base URL of this server; derived from host and port when unset.",
    )
    tenant_id: str = DEFAULT_TENANT_ID
    tenant_domain: str = "visio-rdv.onmicrosoft.com"
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str = DEFAULT_CLIENT_SECRET
    client_certificate_pem: str | None = None
    # The web app registration booking's advisor page signs advisors in with (docs/
    # microsoft-365.md): another registration than the daemon's, as in a real tenant.
    sign_in_client_id: str = DEFAULT_SIGN_IN_CLIENT_ID
    sign_in_client_secret: str = DEFAULT_SIGN_IN_CLIENT_SECRET
    sign_in_redirect_uris: list[str] = Field(default_factory=list)
    app_roles: list[str] = Field(default_factory=lambda: list(DEFAULT_APP_ROLES))
    extra_apps: list[AppRegistration] = Field(default_factory=list)
    token_lifetime_seconds: int = Field(default=3599, ge=1)
    allowed_user_ids: list[str] | None = Field(
        default=None,
        description="Mailboxes the application access policy grants; None grants all users "
        "(like a policy granted globally).",
    )
    external_id_property_name: str = Field(
        default="VisioRdvAppointmentId",
        description="Name part of the single-value extended property counted by "
        "/_emulator/stats as the event's external id (meetings' appointment id property).",
    )
    join_url_style: Literal["classic", "short"] = Field(
        default="classic",
        description="Join URLs as `/l/meetup-join/19%3ameeting_…` (classic) or as Teams' "
        "newer `/meet/<id>?p=<passcode>` (short). Clients must treat both as opaque.",
    )
    teams_disabled_user_ids: list[str] = Field(
        default_factory=list,
        description="Mailboxes without a Teams licence: their online events get no meeting.",
    )
    audio_conferencing: bool = Field(
        default=True,
        description="Whether organisers hold an Audio Conferencing licence (dial-in numbers).",
    )
    faults: FaultConfig = Field(
        default_factory=FaultConfig,
        description="Faults at start and after each reset (also set by command-line flags).",
    )
    ca_dir: str = "var/dev-ca"
    extra_hostnames: list[str] = Field(default_factory=list)
    log_level: str = "info"

    @property
    def public_base_url(self) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        host = self.host
        if host in ("0.0.0.0", "::", ""):  # noqa: S104 - mapping a wildcard bind to a name
            host = "localhost"
        try:
            if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address):
                host = f"[{host}]"
        except ValueError:
            pass
        return f"https://{host}:{self.port}"

    @property
    def authority(self) -> str:
        """What msal's `authority=` takes for this tenant."""
        return f"{self.public_base_url}/{self.tenant_id}"

    def app_registrations(self) -> list[AppRegistration]:
        main = AppRegistration(
            client_id=self.client_id,
            client_secret=self.client_secret,
            certificate_pem=self.client_certificate_pem,
            roles=list(self.app_roles),
        )
        sign_in = AppRegistration(
            client_id=self.sign_in_client_id,
            display_name="Visio RDV (conseillers)",
            client_secret=self.sign_in_client_secret,
            roles=[],
            redirect_uris=list(self.sign_in_redirect_uris),
        )
        return [main, sign_in, *self.extra_apps]
