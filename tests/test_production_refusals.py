"""Production mode refuses every development default: each case starts the real console script
with proper production settings but one, and reads the refusal, which must name that setting
and no other (so the baseline itself is proven acceptable: a case that named anything else
would fail).

The processes are started all at once by a module fixture and each case reads its own: the
refusal comes before any connection, so none needs a database or a broker."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from visio_alerts.settings import AlertsSettings
from visio_booking.settings import BookingSettings
from visio_consent.settings import ConsentSettings
from visio_meetings.settings import MeetingsSettings
from visio_notifications.settings import NotificationsSettings
from visio_runtime.settings import LinkSettings, ServiceSettings
from visio_shared.links import LinkKeys, derive_ring

BIN = Path(sys.executable).parent
MASTER = LinkKeys.parse(LinkKeys.generate("k1"))

SCRIPTS = {
    "booking": [str(BIN / "visio-rdv-booking")],
    "meetings": [str(BIN / "visio-rdv-meetings")],
    "notifications": [str(BIN / "visio-rdv-notifications")],
    "consent": [str(BIN / "visio-rdv-consent")],
    "alerts": [str(BIN / "visio-rdv-alerts")],
}
SETTINGS: dict[str, type[ServiceSettings]] = {
    "booking": BookingSettings,
    "meetings": MeetingsSettings,
    "notifications": NotificationsSettings,
    "consent": ConsentSettings,
    "alerts": AlertsSettings,
}
PREFIX = {name: name.upper() + "_" for name in SCRIPTS}


def ring_for(service: str) -> str:
    kind = SETTINGS[service]
    assert issubclass(kind, LinkSettings)
    return derive_ring(MASTER, kind.LINK_PURPOSES)


def proper(service: str) -> dict[str, str]:
    """Settings production accepts (the Kafka cluster and database named are not reached)."""
    prefix = PREFIX[service]
    env = {
        "VISIO_ENVIRONMENT": "production",
        f"{prefix}KAFKA_BOOTSTRAP_SERVERS": "kafka-1.caf.example:9093",
        f"{prefix}KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        f"{prefix}KAFKA_SASL_USERNAME": f"visio-rdv-{service}",
        f"{prefix}KAFKA_SASL_PASSWORD": secrets.token_urlsafe(24),
        f"{prefix}KAFKA_ENABLE_IDEMPOTENCE": "true",
        f"{prefix}TOPIC_REPLICATION_FACTOR": "3",
        f"{prefix}TOPIC_MIN_INSYNC_REPLICAS": "2",
        f"{prefix}DATABASE_URL": (
            f"postgresql://visio_{service}:{secrets.token_urlsafe(18)}@db.caf.example/visio"
        ),
    }
    if service in ("booking", "notifications", "consent"):
        env[f"{prefix}LINK_KEYS"] = ring_for(service)
    if service == "booking":
        env["BOOKING_CONSENT_PUBLIC_URL"] = "https://consentement.caf.example"
    if service == "notifications":
        env |= {
            "NOTIFICATIONS_SMTP_STARTTLS": "true",
            "NOTIFICATIONS_BOOKING_PUBLIC_URL": "https://rdv.caf.example",
            "NOTIFICATIONS_CONSENT_PUBLIC_URL": "https://consentement.caf.example",
        }
    if service == "consent":
        env |= {
            "CONSENT_SUBJECT_KEY": secrets.token_urlsafe(32),
            "CONSENT_CHECKPOINT_SIGNING_KEY": base64.b64encode(os.urandom(32)).decode(),
            "CONSENT_BOOKING_PUBLIC_URL": "https://rdv.caf.example",
        }
    if service == "booking":
        env |= {
            "BOOKING_ADVISOR_AUTHORITY": "https://login.microsoftonline.com/caf-tenant",
            "BOOKING_ADVISOR_CLIENT_ID": "0b7e4d2a-1c3f-4e5a-8d9b-6a2c1f0e3d44",
            "BOOKING_ADVISOR_CLIENT_SECRET": secrets.token_urlsafe(24),
            "BOOKING_ADVISOR_REDIRECT_URI": "https://rdv.caf.example/conseiller/connexion",
            "BOOKING_ADVISOR_SESSION_KEY": secrets.token_urlsafe(32),
        }
    if service == "meetings":
        env |= {
            "MEETINGS_AUTHORITY": "https://login.microsoftonline.com/caf-tenant",
            "MEETINGS_CLIENT_ID": "6f1c2a4e-8b1d-4c55-9a51-2f9e6f0c1d11",
            "MEETINGS_CLIENT_SECRET": secrets.token_urlsafe(24),
            "MEETINGS_BOOKING_PUBLIC_URL": "https://rdv.caf.example",
        }
    if service == "alerts":
        env |= {
            "ALERTS_OWNER_DATABASE_URL": "postgresql://visio_admin:s3cret-owner@db.caf.example/v",
            "ALERTS_DATABASE_PASSWORD": secrets.token_urlsafe(18),
            "ALERTS_SMTP_STARTTLS": "true",
        }
    return env


# (service, settings changed from the proper ones (None: unset), settings the refusal names)
CASES: dict[str, tuple[str, dict[str, str | None], set[str]]] = {
    "advisor-sign-in-emulator": (
        "booking",
        {
            "BOOKING_ADVISOR_AUTHORITY": None,
            "BOOKING_ADVISOR_CLIENT_ID": None,
            "BOOKING_ADVISOR_CLIENT_SECRET": None,
            "BOOKING_ADVISOR_REDIRECT_URI": "http://rdv.caf.example/conseiller/connexion",
            "BOOKING_ADVISOR_SESSION_KEY": None,
        },
        {
            "BOOKING_ADVISOR_AUTHORITY",
            "BOOKING_ADVISOR_CLIENT_ID",
            "BOOKING_ADVISOR_CLIENT_SECRET",
            "BOOKING_ADVISOR_REDIRECT_URI",
            "BOOKING_ADVISOR_SESSION_KEY",
        },
    ),
    "plaintext-kafka": (
        "booking",
        {"BOOKING_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"},
        {"BOOKING_KAFKA_SECURITY_PROTOCOL"},
    ),
    "sasl-without-tls": (
        "meetings",
        {
            "MEETINGS_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "MEETINGS_KAFKA_ALLOW_SASL_WITHOUT_TLS": "true",
        },
        {"MEETINGS_KAFKA_SECURITY_PROTOCOL", "MEETINGS_KAFKA_ALLOW_SASL_WITHOUT_TLS"},
    ),
    "sasl-without-principal": (
        "consent",
        {"CONSENT_KAFKA_SASL_USERNAME": None},
        {"CONSENT_KAFKA_SASL_USERNAME"},
    ),
    "one-replica": (
        "notifications",
        {"NOTIFICATIONS_TOPIC_REPLICATION_FACTOR": "1"},
        {"NOTIFICATIONS_TOPIC_REPLICATION_FACTOR"},
    ),
    "min-insync-1": (
        "consent",
        {"CONSENT_TOPIC_MIN_INSYNC_REPLICAS": "1"},
        {"CONSENT_TOPIC_MIN_INSYNC_REPLICAS"},
    ),
    "min-insync-unset": (
        "alerts",
        {"ALERTS_TOPIC_MIN_INSYNC_REPLICAS": None},
        {"ALERTS_TOPIC_MIN_INSYNC_REPLICAS"},
    ),
    "topic-configs-off": (
        "meetings",
        {"MEETINGS_TOPIC_CONFIGS_ENABLED": "false"},
        {"MEETINGS_TOPIC_MIN_INSYNC_REPLICAS"},
    ),
    "producer-not-idempotent": (
        "booking",
        {"BOOKING_KAFKA_ENABLE_IDEMPOTENCE": "false"},
        {"BOOKING_KAFKA_ENABLE_IDEMPOTENCE"},
    ),
    "waiver-on-a-remote-broker": (
        "booking",
        {"VISIO_PRODUCTION_LOCAL_BROKER_WAIVER": "true"},
        {"VISIO_PRODUCTION_LOCAL_BROKER_WAIVER"},
    ),
    "smtp-in-clear": (
        "notifications",
        {"NOTIFICATIONS_SMTP_STARTTLS": None},
        {"NOTIFICATIONS_SMTP_STARTTLS"},
    ),
    "smtp-auth-in-clear-switch": (
        "notifications",
        {"NOTIFICATIONS_SMTP_ALLOW_AUTH_WITHOUT_TLS": "true"},
        {"NOTIFICATIONS_SMTP_ALLOW_AUTH_WITHOUT_TLS"},
    ),
    "sms-receipts-dev-token": (
        "notifications",
        {"NOTIFICATIONS_SMS_PROVIDER": "brevo", "NOTIFICATIONS_SMS_API_KEY": "x" * 40},
        {"NOTIFICATIONS_SMS_RECEIPT_TOKEN"},
    ),
    "sms-provider-in-clear": (
        "notifications",
        {
            "NOTIFICATIONS_SMS_PROVIDER": "brevo",
            "NOTIFICATIONS_SMS_API_KEY": "x" * 40,
            "NOTIFICATIONS_SMS_RECEIPT_TOKEN": secrets.token_urlsafe(24),
            "NOTIFICATIONS_SMS_API_URL": "http://api.brevo.example/v3",
        },
        {"NOTIFICATIONS_SMS_API_URL"},
    ),
    "bounces-dev-token": (
        "notifications",
        {"NOTIFICATIONS_BOUNCE_DOMAIN": "bounces.caf.example"},
        {"NOTIFICATIONS_BOUNCE_TOKEN"},
    ),
    "alerts-smtp-in-clear": (
        "alerts",
        {"ALERTS_SMTP_STARTTLS": None},
        {"ALERTS_SMTP_STARTTLS"},
    ),
    "http-public-url-in-emails": (
        "notifications",
        {"NOTIFICATIONS_CONSENT_PUBLIC_URL": "http://consentement.caf.example"},
        {"NOTIFICATIONS_CONSENT_PUBLIC_URL"},
    ),
    "http-public-url-default": (
        "consent",
        {"CONSENT_BOOKING_PUBLIC_URL": None},
        {"CONSENT_BOOKING_PUBLIC_URL"},
    ),
    # The CGU link of booking's pages and API (consent's /cgu/<version>): https, and set.
    "http-cgu-link": (
        "booking",
        {"BOOKING_CONSENT_PUBLIC_URL": "http://consentement.caf.example"},
        {"BOOKING_CONSENT_PUBLIC_URL"},
    ),
    "cgu-link-left-local": (
        "booking",
        {"BOOKING_CONSENT_PUBLIC_URL": None},
        {"BOOKING_CONSENT_PUBLIC_URL"},
    ),
    # The advisor's page, linked from each Outlook event: https, and set.
    "http-advisor-page-link": (
        "meetings",
        {"MEETINGS_BOOKING_PUBLIC_URL": "http://rdv.caf.example"},
        {"MEETINGS_BOOKING_PUBLIC_URL"},
    ),
    "advisor-page-link-left-local": (
        "meetings",
        {"MEETINGS_BOOKING_PUBLIC_URL": None},
        {"MEETINGS_BOOKING_PUBLIC_URL"},
    ),
    "http-booking-portal": (
        "booking",
        {"BOOKING_BOOKING_PORTAL_URLS": '{"974": "http://rdv.caf974.example"}'},
        {"BOOKING_BOOKING_PORTAL_URLS"},
    ),
    "dev-subject-key": (
        "consent",
        {"CONSENT_SUBJECT_KEY": None},
        {"CONSENT_SUBJECT_KEY"},
    ),
    "dev-checkpoint-key": (
        "consent",
        {"CONSENT_CHECKPOINT_SIGNING_KEY": None},
        {"CONSENT_CHECKPOINT_SIGNING_KEY"},
    ),
    "dev-link-key": (
        "booking",
        {"BOOKING_LINK_KEYS": "dev:DEV-ONLY-public-link-key-set-VISIO_LINK_KEYS-0001"},
        {"BOOKING_LINK_KEYS"},
    ),
    "master-link-key": (
        "notifications",
        {"NOTIFICATIONS_LINK_KEYS": MASTER.setting()},
        {"NOTIFICATIONS_LINK_KEYS"},
    ),
    "consent-holding-bookings-key": (
        "consent",
        {"CONSENT_LINK_KEYS": ring_for("booking")},
        {"CONSENT_LINK_KEYS"},
    ),
    "notifications-holding-the-address-form-key": (
        "notifications",
        {"NOTIFICATIONS_LINK_KEYS": ring_for("booking")},
        {"NOTIFICATIONS_LINK_KEYS"},
    ),
    "dev-database-password": (
        "booking",
        {"BOOKING_DATABASE_URL": "postgresql://visio_booking:visio_booking@db.caf.example/visio"},
        {"BOOKING_DATABASE_URL"},
    ),
    "dev-alerts-database-password": (
        "alerts",
        {"ALERTS_DATABASE_PASSWORD": None},
        {"ALERTS_DATABASE_PASSWORD"},
    ),
    "dev-graph-secret": (
        "meetings",
        {"MEETINGS_CLIENT_SECRET": "dev-only-emulator-secret"},
        {"MEETINGS_CLIENT_SECRET"},
    ),
    "outbox-timeout-for-tests": (
        "booking",
        {"BOOKING_OUTBOX_PUBLISH_TIMEOUT_S": "2"},
        {"BOOKING_OUTBOX_PUBLISH_TIMEOUT_S"},
    ),
}


def environment(service: str, changes: dict[str, str | None]) -> dict[str, str]:
    # Nothing of the caller's environment that a setting could be read from.
    base = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("VISIO_", "DATABASE_URL", *PREFIX.values()))
    }
    env = base | proper(service)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


@pytest.fixture(scope="module")
def refusals() -> dict[str, tuple[int, str]]:
    """Every case's process, started at once (each is mostly imports), then read."""
    started = {
        case: subprocess.Popen(
            SCRIPTS[service],
            env=environment(service, changes),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for case, (service, changes, _) in CASES.items()
    }
    results: dict[str, tuple[int, str]] = {}
    for case, process in started.items():
        try:
            _, stderr = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
            stderr = "still running: it was not refused\n" + stderr
        results[case] = (process.returncode, stderr)
    return results


@pytest.mark.parametrize("service", sorted(SCRIPTS))
def test_the_proper_settings_are_accepted(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("VISIO_", "DATABASE_URL", *PREFIX.values())):
            monkeypatch.delenv(name)
    for name, value in proper(service).items():
        monkeypatch.setenv(name, value)
    settings = SETTINGS[service]()
    assert settings.environment == "production"
    assert settings.waived_production_checks == []


@pytest.mark.parametrize("case", sorted(CASES))
def test_production_refuses_each_development_default(
    case: str, refusals: dict[str, tuple[int, str]]
) -> None:
    _, _, named = CASES[case]
    returncode, stderr = refusals[case]
    assert returncode == 2, stderr
    assert "VISIO_ENVIRONMENT=production refuses to start" in stderr, stderr
    assert "Traceback" not in stderr, stderr
    refused = {
        line.strip()[2:].split(":", 1)[0]
        for line in stderr.splitlines()
        if line.strip().startswith("- ")
    }
    assert refused == named, stderr
