"""Production mode: with `VISIO_ENVIRONMENT=production`, a process refuses to start on a setting
that is only safe on a development machine, and says which.

The defaults are chosen so that `visio-rdv up` works with nothing to configure: PLAINTEXT Kafka
with one replica, an SMTP sink without TLS, `http://` pages, generated development keys. Each of
them, left in place on a real deployment, is a quiet hole. So every settings class of the
project (`visio_runtime.settings.ServiceSettings` and its subclasses) runs these checks when it
is read in production mode: the checks every process shares live here once; each service adds
its own (`production_findings`), and the validation refuses with every finding at once, each
naming its environment variable.

One waiver, for a broker on this very machine only: tansu, the embedded broker of the local
stack, has no TLS, no SASL, no replication and no idempotent producer. With
`VISIO_PRODUCTION_LOCAL_BROKER_WAIVER=true` and every bootstrap server on a loopback address, the
Kafka checks are not enforced but logged at WARNING by every process at each start (and counted
on `/metrics`, `visio_production_waivers`); with any other broker the waiver itself is refused.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import AliasChoices
from pydantic_settings import BaseSettings

ENVIRONMENT_ENV = "VISIO_ENVIRONMENT"
LOCAL_BROKER_WAIVER_ENV = "VISIO_PRODUCTION_LOCAL_BROKER_WAIVER"

# The marker the project's public development secrets carry (docker-compose's defaults, the
# consent subject key's default): any secret holding it is a development one.
DEV_MARKER = "dev-only"

MIN_REPLICATION_FACTOR = 3
MIN_INSYNC_REPLICAS = 2


@dataclass(frozen=True)
class Finding:
    """One setting production refuses: which (as its environment variable), and why."""

    setting: str
    problem: str
    # A Kafka check the local-broker waiver may lift (tansu cannot satisfy it).
    local_broker: bool = False

    def __str__(self) -> str:
        return f"{self.setting}: {self.problem}"


class ProductionRefusal(ValueError):
    """Raised by the settings' validation; its message lists every finding."""

    def __init__(self, findings: Iterable[Finding]) -> None:
        self.findings = tuple(findings)
        lines = "\n".join(f"  - {finding}" for finding in self.findings)
        super().__init__(f"{ENVIRONMENT_ENV}=production refuses to start:\n{lines}")


def env_name(settings: BaseSettings, field: str) -> str:
    """The environment variable a field is read from (its alias, else prefix + name)."""
    info = type(settings).model_fields[field]
    alias = info.validation_alias
    if isinstance(alias, str):
        return alias.upper()
    if isinstance(alias, AliasChoices):
        first = next((choice for choice in alias.choices if isinstance(choice, str)), field)
        return first.upper()
    prefix = str(settings.model_config.get("env_prefix", ""))
    return f"{prefix}{field}".upper()


def is_development_secret(value: str) -> bool:
    return DEV_MARKER in value.lower()


def kafka_findings(settings: Any) -> list[Finding]:
    """PLAINTEXT or SASL without TLS, too few replicas, no idempotent producer."""

    def name(field: str) -> str:
        return env_name(settings, field)

    findings: list[Finding] = []
    protocol = settings.kafka_security_protocol
    if protocol in ("PLAINTEXT", "SASL_PLAINTEXT"):
        findings.append(
            Finding(
                name("kafka_security_protocol"),
                f"{protocol} carries events (personal data) and credentials in clear: use "
                "SASL_SSL (or SSL with client certificates)",
                local_broker=True,
            )
        )
    if settings.kafka_security_protocol == "SASL_SSL" and not settings.kafka_sasl_username:
        findings.append(
            Finding(name("kafka_sasl_username"), "SASL_SSL needs this service's own principal")
        )
    if settings.topic_replication_factor < MIN_REPLICATION_FACTOR:
        findings.append(
            Finding(
                name("topic_replication_factor"),
                f"{settings.topic_replication_factor} replica(s): one broker lost loses events; "
                f"at least {MIN_REPLICATION_FACTOR}",
                local_broker=True,
            )
        )
    min_isr = settings.topic_min_insync_replicas
    if min_isr is None or min_isr < MIN_INSYNC_REPLICAS or not settings.topic_configs_enabled:
        findings.append(
            Finding(
                name("topic_min_insync_replicas"),
                f"{'unset' if min_isr is None else min_isr}"
                f"{'' if settings.topic_configs_enabled else ' (topic configs disabled)'}: "
                f"acks=all is only as good as min.insync.replicas; at least {MIN_INSYNC_REPLICAS}",
                local_broker=True,
            )
        )
    if not settings.kafka_enable_idempotence:
        findings.append(
            Finding(
                name("kafka_enable_idempotence"),
                "off: a producer retry may write an event twice or out of order",
                local_broker=True,
            )
        )
    return findings


def switch_findings(settings: Any, refused: Mapping[str, Any], why: str) -> list[Finding]:
    """Fields at a value meant only for tests or a development machine (`refused`: field →
    the value production refuses)."""
    return [
        Finding(env_name(settings, field), f"{getattr(settings, field)!r}: {why}")
        for field, value in refused.items()
        if getattr(settings, field) == value
    ]


def public_url_findings(settings: Any, internal: Iterable[str] = ()) -> list[Finding]:
    """Every `*_url` / `*_urls` setting that is `http://`: people's browsers and mail clients
    follow them, so they are https. `internal` names the URL fields that are not public (the
    database's, an outbound proxy's)."""
    skip = {"database_url", "owner_database_url", *internal}
    findings: list[Finding] = []
    for field in type(settings).model_fields:
        if field in skip or not (field.endswith("_url") or field.endswith("_urls")):
            continue
        value = getattr(settings, field)
        values = value.values() if isinstance(value, dict) else [value]
        for url in values:
            if isinstance(url, str) and urlsplit(url).scheme.lower() == "http":
                findings.append(
                    Finding(env_name(settings, field), f"{url!r} is http://: use https://")
                )
                break
    return findings


def database_findings(settings: Any, field: str = "database_url") -> list[Finding]:
    """A connection whose password is missing or the development one (the role's own name)."""
    secret = getattr(settings, field)
    if secret is None:
        return []
    parts = urlsplit(secret.get_secret_value())
    password = parts.password or ""
    if not password or password == parts.username or is_development_secret(password):
        return [
            Finding(
                env_name(settings, field),
                "no password, or the development one (the role's name): give the role its "
                "own secret (see docs/production.md)",
            )
        ]
    return []


def is_loopback(bootstrap_servers: str) -> bool:
    """Every bootstrap server on this machine (127.0.0.0/8, ::1, localhost)."""
    for server in bootstrap_servers.split(","):
        host = server.strip().rsplit(":", 1)[0].strip("[]")
        if host == "localhost":
            continue
        try:
            if not ipaddress.ip_address(host).is_loopback:
                return False
        except ValueError:
            return False
    return True


def enforce(settings: Any, findings: list[Finding]) -> list[Finding]:
    """Raise ProductionRefusal on the findings not waived; return the waived ones."""
    waiver = bool(settings.production_local_broker_waiver)
    if waiver and not is_loopback(settings.kafka_bootstrap_servers):
        findings = [
            Finding(
                LOCAL_BROKER_WAIVER_ENV,
                f"waives the Kafka checks for a broker on this machine only; "
                f"{env_name(settings, 'kafka_bootstrap_servers')} is "
                f"{settings.kafka_bootstrap_servers!r}",
            ),
            *findings,
        ]
        waiver = False
    refused = [finding for finding in findings if not (waiver and finding.local_broker)]
    if refused:
        raise ProductionRefusal(refused)
    return [finding for finding in findings if finding.local_broker] if waiver else []


def waiver_warning(finding: Finding) -> str:
    return (
        f"PRODUCTION CHECK WAIVED ({LOCAL_BROKER_WAIVER_ENV}, local broker only): {finding} — "
        "never acceptable on a shared or remote broker"
    )
