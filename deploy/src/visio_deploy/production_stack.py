"""`visio-rdv up --production` (or VISIO_ENVIRONMENT=production): the local stack with the
settings production mode accepts, so that the whole system is seen running as it would be
deployed — every process with VISIO_ENVIRONMENT=production, nothing waived but the broker.

`up` owns the secrets it generates, once, under `var/secrets/` (0700; files 0600), and reuses
them on the next start (links already emailed still open, roles keep their passwords):

- `link-master`: the link keys' master; each service receives only the keys derived from it for
  its own purposes (`derive_ring`), never the master (production refuses one);
- `subject-key`, `checkpoint-signing-key`: consent's pseudonymisation and checkpoint keys;
- `database-<service>` (and `database-alerts`): each role's password, given to `migrate` for
  the roles it creates (a fresh embedded PostgreSQL: with DATABASE_URL, an existing role keeps
  its password and the services could not log in — so production mode wants the embedded one);
- `graph-client-secret`: the Graph emulator's application secret, and meetings'.

TLS everywhere, with the development CA of `var/dev-ca` (created at first start): the public
ports serve HTTPS with its server certificate (public URLs are `https://`), the SMTP sink
requires STARTTLS with it, notifications and alerts trust it. The one thing production mode
cannot have locally is a real Kafka cluster: tansu has no TLS, SASL or replication, so every
process runs with the local broker waiver (VISIO_PRODUCTION_LOCAL_BROKER_WAIVER, accepted only
with a loopback broker), which each logs at WARNING at every start and counts on /metrics.
"""

from __future__ import annotations

import base64
import os
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from visio_booking.settings import BookingSettings
from visio_consent.settings import ConsentSettings
from visio_fakes.devca import DevCA
from visio_notifications.settings import NotificationsSettings
from visio_runtime.production import ENVIRONMENT_ENV, LOCAL_BROKER_WAIVER_ENV
from visio_shared.links import LinkKeys, derive_ring

from visio_deploy.stack import SERVICES

LINK_PURPOSES = {
    "booking": BookingSettings.LINK_PURPOSES,
    "notifications": NotificationsSettings.LINK_PURPOSES,
    "consent": ConsentSettings.LINK_PURPOSES,
}
DATABASE_ROLES = (*(service.name for service in SERVICES), "alerts")


@dataclass(frozen=True)
class ProductionSecrets:
    directory: Path
    link_master: LinkKeys
    subject_key: str
    checkpoint_signing_key: str
    graph_client_secret: str
    # The advisors' sign-in (booking's advisor page) against the emulator's second app
    # registration: its client id, secret, and the key of booking's session cookies.
    advisor_client_id: str
    advisor_sign_in_secret: str
    advisor_session_key: str
    database_passwords: dict[str, str]  # booking, meetings, notifications, consent, alerts

    def link_ring(self, service: str) -> str:
        """The keys of the service's own purposes, derived from the master."""
        return derive_ring(self.link_master, LINK_PURPOSES[service])


def ensure_secrets(var: Path) -> ProductionSecrets:
    """Generate the missing secrets under var/secrets; keep the ones already there."""
    directory = var / "secrets"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)

    def secret(name: str, make: Callable[[], str]) -> str:
        path = directory / name
        if not path.exists():
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as out:
                out.write(make() + "\n")
        return path.read_text(encoding="utf-8").strip()

    def token() -> str:
        return secrets.token_urlsafe(32)

    return ProductionSecrets(
        directory=directory,
        link_master=LinkKeys.parse(secret("link-master", lambda: LinkKeys.generate("local1"))),
        subject_key=secret("subject-key", token),
        checkpoint_signing_key=secret(
            "checkpoint-signing-key", lambda: base64.b64encode(os.urandom(32)).decode()
        ),
        graph_client_secret=secret("graph-client-secret", token),
        advisor_client_id=secret("advisor-sign-in-client-id", lambda: str(uuid.uuid4())),
        advisor_sign_in_secret=secret("advisor-sign-in-secret", token),
        advisor_session_key=secret("advisor-session-key", token),
        database_passwords={role: secret(f"database-{role}", token) for role in DATABASE_ROLES},
    )


def common_env(*, waiver: bool) -> dict[str, str]:
    """What every process of the production-mode stack is given."""
    env = {ENVIRONMENT_ENV: "production"}
    if waiver:
        env[LOCAL_BROKER_WAIVER_ENV] = "true"
    return env


def https_env(prefix: str, ca: DevCA) -> dict[str, str]:
    """A process's public port serving HTTPS with the development CA's server certificate."""
    return {
        f"{prefix}HTTP_TLS_CERTFILE": str(ca.server_cert),
        f"{prefix}HTTP_TLS_KEYFILE": str(ca.server_key),
    }


def smtp_sink_env(ca: DevCA) -> dict[str, str]:
    return {
        "SMTP_SINK_TLS_CERTFILE": str(ca.server_cert),
        "SMTP_SINK_TLS_KEYFILE": str(ca.server_key),
    }


def service_env(service: str, found: ProductionSecrets, ca: DevCA) -> dict[str, str]:
    """A service's own secrets and TLS settings, on top of what `up` gives in development."""
    prefix = f"{service.upper()}_"
    env = https_env(prefix, ca)
    if service in LINK_PURPOSES:
        env[f"{prefix}LINK_KEYS"] = found.link_ring(service)
    if service == "meetings":
        env["MEETINGS_CLIENT_SECRET"] = found.graph_client_secret
    if service == "booking":
        env |= {
            "BOOKING_ADVISOR_CLIENT_ID": found.advisor_client_id,
            "BOOKING_ADVISOR_CLIENT_SECRET": found.advisor_sign_in_secret,
            "BOOKING_ADVISOR_SESSION_KEY": found.advisor_session_key,
        }
    if service == "notifications":
        env |= {
            "NOTIFICATIONS_SMTP_STARTTLS": "true",
            "NOTIFICATIONS_SMTP_CA_FILE": str(ca.bundle_path),
        }
    if service == "consent":
        env |= {
            "CONSENT_SUBJECT_KEY": found.subject_key,
            "CONSENT_CHECKPOINT_SIGNING_KEY": found.checkpoint_signing_key,
        }
    return env


def alerts_env(found: ProductionSecrets, ca: DevCA) -> dict[str, str]:
    return {
        **https_env("ALERTS_", ca),
        "ALERTS_DATABASE_PASSWORD": found.database_passwords["alerts"],
        "ALERTS_SMTP_STARTTLS": "true",
        # Alerts' SMTP client trusts the default verify paths: the dev CA's bundle is one.
        "SSL_CERT_FILE": str(ca.bundle_path),
    }
