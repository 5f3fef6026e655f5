"""What `visio-rdv up` (visio_deploy.up) starts beside PostgreSQL, the broker and the
emulators, and what each is given: the four services (their broker, database, peers and, in
production mode, secrets), the alerts process, the lag exporter, the healer, and the SMS
emulator with the settings that send texts and bounces to it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from visio_fakes.devca import DevCA
from visio_fakes.graph_emulator.settings import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_TENANT_ID,
)
from visio_fakes.sms_emulator import API_KEY as SMS_EMULATOR_API_KEY
from visio_notifications.settings import DEV_BOUNCE_TOKEN, DEV_SMS_RECEIPT_TOKEN

from visio_deploy.production_stack import ProductionSecrets, service_env
from visio_deploy.stack import LOCAL_PARTNERS, SERVICES, ServiceDef
from visio_deploy.up_stack import Stack, installed_script

if TYPE_CHECKING:
    from visio_deploy.up import UpSettings


@dataclass(frozen=True)
class Wiring:
    """What the services are given to reach the rest of the stack."""

    bootstrap: str
    dsns: dict[str, str]
    graph_base: str
    ca: DevCA
    link_keys: str
    sms_url: str | None
    found: ProductionSecrets | None  # production mode's secrets
    everyone: dict[str, str]  # production mode's settings for every process


def advisor_callback(settings: UpSettings) -> str:
    """Where the emulator sends a signed-in advisor back to: booking's advisor page."""
    return f"{settings.base_url('booking')}/conseiller/connexion"


def emulator_secrets(found: ProductionSecrets) -> dict[str, str]:
    """The emulator's app registrations with production mode's generated secrets."""
    return {
        "GRAPH_EMULATOR_CLIENT_SECRET": found.graph_client_secret,
        "GRAPH_EMULATOR_SIGN_IN_CLIENT_ID": found.advisor_client_id,
        "GRAPH_EMULATOR_SIGN_IN_CLIENT_SECRET": found.advisor_sign_in_secret,
    }


def start_services(stack: Stack, wiring: Wiring) -> None:
    """The four services, in SERVICES' order."""
    for service in SERVICES:
        stack.start(service.name, service.script, _service_env(stack.settings, service, wiring))


def _service_env(settings: UpSettings, service: ServiceDef, wiring: Wiring) -> dict[str, str]:
    host, var = settings.host, settings.var_dir
    graph_base, found = wiring.graph_base, wiring.found
    prefix = service.env_prefix
    env = {
        f"{prefix}KAFKA_BOOTSTRAP_SERVERS": wiring.bootstrap,
        f"{prefix}TOPIC_PREFIX": settings.topic_prefix,
        f"{prefix}DATABASE_URL": wiring.dsns[service.name],
        f"{prefix}HTTP_HOST": host,
        f"{prefix}HTTP_PORT": str(settings.service_port(service.name)),
    }
    if service.name == "meetings":
        env |= {
            "MEETINGS_GRAPH_BASE_URL": f"{graph_base}/v1.0",
            "MEETINGS_AUTHORITY": f"{graph_base}/{DEFAULT_TENANT_ID}",
            "MEETINGS_CLIENT_ID": DEFAULT_CLIENT_ID,
            "MEETINGS_CLIENT_SECRET": DEFAULT_CLIENT_SECRET,
            "MEETINGS_CA_BUNDLE": str(wiring.ca.bundle_path),
            # The advisor's page, linked from each Outlook event.
            "MEETINGS_BOOKING_PUBLIC_URL": settings.base_url("booking"),
        }
    if service.name in ("booking", "notifications", "consent"):
        env[f"{prefix}LINK_KEYS"] = wiring.link_keys
    if service.name == "booking":
        env |= {
            "BOOKING_PARTNERS": json.dumps(list(LOCAL_PARTNERS)),
            "BOOKING_CONSENT_PUBLIC_URL": settings.base_url("consent"),  # /cgu/<version>
            # The advisor's page signs advisors in against the emulator (its users).
            "BOOKING_ADVISOR_AUTHORITY": f"{graph_base}/{DEFAULT_TENANT_ID}",
            "BOOKING_ADVISOR_REDIRECT_URI": advisor_callback(settings),
            "BOOKING_ADVISOR_CA_BUNDLE": str(wiring.ca.bundle_path),
        }
    if service.name == "notifications":
        env |= {
            "NOTIFICATIONS_SMTP_HOST": host,
            "NOTIFICATIONS_SMTP_PORT": str(settings.smtp_port),
            "NOTIFICATIONS_BOOKING_PUBLIC_URL": settings.base_url("booking"),
            "NOTIFICATIONS_CONSENT_PUBLIC_URL": settings.base_url("consent"),
            # An erasure deletes the person's emails from the sink too.
            "NOTIFICATIONS_MAIL_SINK_DIR": str(var / "mail"),
        }
        if wiring.sms_url is not None:
            env |= sms_env(settings.base_url("notifications"), wiring.sms_url)
    if service.name == "consent":
        # The dev checkpoint-signing key and the checkpoint file live with the rest of var/.
        env |= {
            "CONSENT_VAR_DIR": str(var / "consent"),
            "CONSENT_BOOKING_PUBLIC_URL": settings.base_url("booking"),
        }
        # The export asks each service for its part on its admin port, which serves plain
        # HTTP: production mode refuses http:// URLs, so there the export names those
        # parts as not configured (docs/personal-data.md), as production compose does.
        if not settings.production:
            env |= {
                f"CONSENT_{name.upper()}_INTERNAL_URL": (
                    f"http://{host}:{settings.service_port(name) + 1000}"
                )
                for name in ("booking", "meetings", "notifications")
            }
    if found is not None:
        env |= wiring.everyone | service_env(service.name, found, wiring.ca)
    return env


BOUNCE_DOMAIN = "bounces.visio-rdv.localhost"


def start_sms_emulator(stack: Stack) -> str:
    """The Brevo emulator (`visio-rdv-sms-emulator`); returns its API's base URL."""
    settings = stack.settings
    argv = [installed_script("visio-rdv-sms-emulator"), "--host", settings.host]
    stack.launch("sms-emulator", [*argv, "--port", str(settings.sms_port)])
    return f"http://{settings.host}:{settings.sms_port}/v3"


def sms_env(notifications_url: str, sms_url: str) -> dict[str, str]:
    """Notifications sends texts to the emulator, which posts its receipts back, and gives
    each email a bounce address the sink's DSNs come back to."""
    return {
        "NOTIFICATIONS_SMS_PROVIDER": "brevo",
        "NOTIFICATIONS_SMS_API_URL": sms_url,
        "NOTIFICATIONS_SMS_API_KEY": SMS_EMULATOR_API_KEY,
        "NOTIFICATIONS_SMS_RECEIPT_URL": f"{notifications_url}/v1/sms/receipts",
        "NOTIFICATIONS_SMS_RECEIPT_TOKEN": DEV_SMS_RECEIPT_TOKEN,
        "NOTIFICATIONS_BOUNCE_DOMAIN": BOUNCE_DOMAIN,
        "NOTIFICATIONS_BOUNCE_TOKEN": DEV_BOUNCE_TOKEN,
    }


def bounce_env(settings: UpSettings, notifications_url: str) -> dict[str, str]:
    """The sink bounces `bounce_later` recipients and posts the DSNs to notifications, as the
    relay's pipe does in production (docs/sms.md)."""
    return {
        "SMTP_SINK_BOUNCE_LATER": json.dumps(settings.bounce_later),
        "SMTP_SINK_BOUNCE_URL": f"{notifications_url}/v1/bounces/{DEV_BOUNCE_TOKEN}",
    }


def start_alerts(
    stack: Stack, owner_dsn: str, bootstrap: str, extra: dict[str, str] | None = None
) -> None:
    """The alerts service (`visio-rdv-alerts`): it runs its own migration, hence the owner
    connection; alert emails land in the same sink as the others."""
    settings = stack.settings
    env = {
        "ALERTS_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "ALERTS_TOPIC_PREFIX": settings.topic_prefix,
        "ALERTS_OWNER_DATABASE_URL": owner_dsn,
        "ALERTS_HTTP_HOST": settings.host,
        "ALERTS_HTTP_PORT": str(settings.alerts_port),
        "ALERTS_SMTP_HOST": settings.host,
        "ALERTS_SMTP_PORT": str(settings.smtp_port),
        **(extra or {}),
    }
    stack.launch("alerts", [installed_script("visio-rdv-alerts")], env)


LAG_EXPORTER = "lag-exporter"


def start_lag_exporter(stack: Stack, bootstrap: str, extra: dict[str, str] | None = None) -> None:
    """`visio-rdv ops lag --serve-metrics`: every group's lag on /metrics, measured from outside
    the consumers, so a consumer that dies shows as growing lag (visio_deploy.ops.lag_exporter)."""
    settings = stack.settings
    env = {
        "VISIO_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "VISIO_TOPIC_PREFIX": settings.topic_prefix,
        **(extra or {}),
    }
    listen = f"{settings.host}:{settings.lag_exporter_port}"
    argv = [installed_script("visio-rdv"), "ops", "lag", "--serve-metrics", listen]
    stack.launch(LAG_EXPORTER, argv, env)


def start_healer(
    stack: Stack,
    bootstrap: str,
    graph_base: str,
    ca_bundle: Path,
    extra: dict[str, str] | None = None,
) -> None:
    """`visio-rdv ops heal`: the dead letters an outage of Graph or of the relay caused are
    replayed once it answers again (visio_deploy.ops.heal)."""
    settings = stack.settings
    probes = {
        "graph": f"{graph_base}/v1.0/",
        "smtp": f"smtp://{settings.host}:{settings.smtp_port}",
    }
    env = {
        "VISIO_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "VISIO_TOPIC_PREFIX": settings.topic_prefix,
        "VISIO_HEAL_PROBES": json.dumps(probes),
        "VISIO_HEAL_CA_BUNDLE": str(ca_bundle),
        **(extra or {}),
    }
    stack.launch("heal", [installed_script("visio-rdv"), "ops", "heal"], env)
