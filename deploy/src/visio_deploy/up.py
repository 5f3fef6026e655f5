"""`visio-rdv up`: the whole system on one machine, in the foreground, with nothing to install.

Starts PostgreSQL (or uses DATABASE_URL), runs the migrations, starts tansu, the Graph + Entra
emulator, the SMTP sink, the SMS provider's emulator (docs/sms.md), the four services, the
alerts process and the lag exporter, prints `ready` once each answers and every consumer group
holds its partitions (visio_deploy.readiness), records how to reach it all in
`var/stack.json` for the commands of other terminals (visio_runtime.local_stack), and on Ctrl-C
or SIGTERM stops everything it started, in reverse order.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path
from types import FrameType
from typing import Literal

import asyncpg
from pydantic import AliasChoices, Field, SecretStr
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings, SettingsConfigDict
from visio_booking.keys import API_KEYS
from visio_fakes.devca import DevCA, ensure_dev_ca
from visio_fakes.postgres import EmbeddedPostgres
from visio_fakes.processes import wait_for_port
from visio_fakes.tansu import start_tansu
from visio_runtime.kafka import ensure_topics
from visio_runtime.local_stack import (
    STACK_FILE,
    LocalStack,
    database_label,
    default_var_dir,
    process_started,
    read_stack_file,
)
from visio_runtime.settings import ServiceSettings
from visio_shared import Topics
from visio_shared.links import LinkKeys

from visio_deploy.migrate import migrate_all, service_dsns
from visio_deploy.production_stack import (
    ProductionSecrets,
    alerts_env,
    common_env,
    ensure_secrets,
    smtp_sink_env,
)
from visio_deploy.readiness import expected_partitions, wait_ready
from visio_deploy.stack import LOCAL_PARTNERS, SERVICES
from visio_deploy.up_processes import (
    LAG_EXPORTER,
    Wiring,
    advisor_callback,
    bounce_env,
    emulator_secrets,
    start_alerts,
    start_healer,
    start_lag_exporter,
    start_services,
    start_sms_emulator,
)
from visio_deploy.up_stack import Stack, installed_script, say

# What other modules take from here (the stack's processes live in visio_deploy.up_stack).
__all__ = [
    "LAG_EXPORTER",
    "Stack",
    "UpSettings",
    "bring_up",
    "installed_script",
    "main_up",
    "refuse_a_second_stack",
    "say",
    "settings_help",
]


class UpSettings(BaseSettings):
    """What `up` reads from the environment; `visio-rdv up --help` lists them (`settings_help`)."""

    model_config = SettingsConfigDict(env_prefix="VISIO_", extra="ignore")

    var_dir: Path = Field(
        default_factory=default_var_dir,
        description="Where the stack keeps its data, logs, emails and var/stack.json (the "
        "commands of other terminals look there); default: var/ of this checkout.",
    )
    host: str = Field(default="127.0.0.1", description="The address every process listens on.")
    kafka_port: int = Field(default=9092, description="The embedded broker's port.")
    graph_port: int = Field(default=8443, description="The Graph + Entra ID emulator's port.")
    smtp_port: int = Field(default=1025, description="The SMTP sink's port.")
    sms_port: int = Field(
        default=8466,
        description="The SMS provider's emulator (Brevo's API; docs/sms.md); what it was sent "
        "is at /_emulator/messages.",
    )
    bounce_later: list[str] = Field(
        default_factory=lambda: [r"@bounce-later\.example$"],
        description="Recipients (regular expressions) the SMTP sink accepts mail for, then "
        "bounces later: a DSN goes back to the email's bounce address and on to notifications, "
        "as a relay's would (docs/sms.md). JSON list.",
    )
    booking_port: int = Field(default=8080, description="Booking's API and pages.")
    meetings_port: int = Field(default=8081, description="Meetings' health and metrics.")
    notifications_port: int = Field(default=8082, description="Notifications' health, metrics.")
    consent_port: int = Field(default=8083, description="Consent's API and pages.")
    alerts_port: int = Field(default=8084, description="The alerts process's health, metrics.")
    lag_exporter_port: int = Field(
        default=8085, description="The lag exporter's /metrics (every consumer group's lag)."
    )
    topic_prefix: str = Field(default="visio-rdv", description="Prefix of every topic's name.")
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        description="An existing broker (Apache Kafka, say) instead of starting tansu.",
    )
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("VISIO_DATABASE_URL", "DATABASE_URL"),
        description="An owner connection to an existing PostgreSQL instead of the embedded one.",
    )
    ready_timeout_s: float = Field(
        default=120.0, description="Seconds to wait for every process to be ready."
    )
    environment: Literal["development", "production"] = Field(
        default="development",
        description="`production` (or `visio-rdv up --production`): every process in production "
        "mode, with secrets generated under var/secrets, HTTPS and SMTP STARTTLS with the "
        "development CA, and the local broker waiver for tansu (docs/production.md).",
    )

    @property
    def production(self) -> bool:
        return self.environment == "production"

    @property
    def scheme(self) -> str:
        return "https" if self.production else "http"

    def base_url(self, name: str) -> str:
        return f"{self.scheme}://{self.host}:{self.service_port(name)}"

    def service_port(self, name: str) -> int:
        port: int = getattr(self, f"{name}_port")
        return port


class Stopped(Exception):
    """Ctrl-C or SIGTERM."""


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise Stopped(signal.Signals(signum).name)


def run_up(settings: UpSettings) -> int:
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    stack = Stack(settings)
    try:
        bring_up(stack)
        while True:
            stack.check_alive()
            time.sleep(0.5)
    except Stopped as stopped:
        say(f"{stopped}: stopping")
        return 0
    except Exception as exc:
        say(f"error: {exc}")
        return 1
    finally:
        # A second Ctrl-C must not leave half the stack running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop_all()
        say("stopped")


def bring_up(stack: Stack) -> None:
    settings = stack.settings
    var = settings.var_dir.resolve()
    settings.var_dir = var
    (var / "mail").mkdir(parents=True, exist_ok=True)
    refuse_a_second_stack(var)
    owner_dsn = _start_database(stack)
    production = settings.production
    found = ensure_secrets(var) if production else None
    passwords = found.database_passwords if found else None
    if found is not None:
        say(f"PRODUCTION MODE: secrets in {found.directory} (generated once, kept)")
        if settings.database_url:
            say("PRODUCTION MODE with DATABASE_URL: roles that exist keep their passwords")
    applied = asyncio.run(migrate_all(owner_dsn, passwords))
    say(f"migrations: {sum(len(files) for files in applied.values())} applied")
    dsns = service_dsns(owner_dsn, passwords)
    api_key = ensure_dev_api_key(owner_dsn, var / "dev-api-key")
    bootstrap, waiver = _start_broker(stack)
    everyone = common_env(waiver=waiver) if production else {}
    ca = ensure_dev_ca(var / "dev-ca")
    graph_base, sms_url = _start_emulators(stack, ca, found)
    link_keys = ensure_link_keys(var / "link-keys")
    start_services(
        stack, Wiring(bootstrap, dsns, graph_base, ca, link_keys, sms_url, found, everyone)
    )
    start_alerts(stack, owner_dsn, bootstrap, everyone | (alerts_env(found, ca) if found else {}))
    start_lag_exporter(stack, bootstrap, everyone)
    start_healer(stack, bootstrap, graph_base, ca.bundle_path, everyone)

    kafka = ServiceSettings(kafka_bootstrap_servers=bootstrap, topic_prefix=settings.topic_prefix)
    wait_ready(stack, asyncio.run(expected_partitions(kafka, LOCAL_PARTNERS)), say)
    recorded = record_stack(stack, owner_dsn, bootstrap, sms_url)
    _say_ready(stack, api_key, sms_url, recorded)


def _start_database(stack: Stack) -> str:
    """The owner connection: DATABASE_URL's, or the embedded PostgreSQL's, started."""
    settings = stack.settings
    if settings.database_url:
        say("PostgreSQL: DATABASE_URL")
        return settings.database_url
    stack.postgres = EmbeddedPostgres(settings.var_dir / "pg")
    owner_dsn = stack.postgres.start()
    say(f"PostgreSQL: embedded, data in {settings.var_dir / 'pg'}")
    return owner_dsn


def _start_broker(stack: Stack) -> tuple[str, bool]:
    """tansu (unless a broker is given) and the topics; the bootstrap servers, and whether
    production mode waives its checks for the local broker."""
    settings = stack.settings
    host = settings.host
    bootstrap = settings.kafka_bootstrap_servers or f"{host}:{settings.kafka_port}"
    if not settings.kafka_bootstrap_servers:
        stack.processes.append(
            ("tansu", start_tansu(host, settings.kafka_port, log=stack.logs / "tansu.log"))
        )
    created = asyncio.run(
        ensure_topics(
            ServiceSettings(kafka_bootstrap_servers=bootstrap, topic_prefix=settings.topic_prefix),
            Topics(settings.topic_prefix).all()
            + Topics(settings.topic_prefix).partner_topics(LOCAL_PARTNERS),
        )
    )
    broker = "external" if settings.kafka_bootstrap_servers else "tansu"
    say(f"Kafka ({broker}): {bootstrap}, {len(created)} topics created")
    # tansu cannot be a production cluster: the one waiver, said loudly (each process says it
    # again at WARNING and counts it on /metrics). An external broker gets none: give it the
    # Kafka settings production asks for.
    waiver = settings.production and broker == "tansu"
    if waiver:
        say(
            "PRODUCTION CHECKS WAIVED FOR THE LOCAL BROKER (VISIO_PRODUCTION_LOCAL_BROKER_WAIVER): "
            "tansu has no TLS, no SASL, no replication, no idempotent producer — "
            "this stack is not a production deployment"
        )
    return bootstrap, waiver


def _start_emulators(
    stack: Stack, ca: DevCA, found: ProductionSecrets | None
) -> tuple[str, str | None]:
    """The Graph + Entra ID emulator, the SMTP sink and (not in production mode) the SMS
    emulator, each answering; Graph's base URL and the SMS API's."""
    settings = stack.settings
    host, var, production = settings.host, settings.var_dir, settings.production
    graph_base = f"https://{host}:{settings.graph_port}"
    stack.start(
        "graph-emulator",
        "visio-rdv-graph-emulator",
        {
            "GRAPH_EMULATOR_HOST": host,
            "GRAPH_EMULATOR_PORT": str(settings.graph_port),
            "GRAPH_EMULATOR_CA_DIR": str(var / "dev-ca"),
            "GRAPH_EMULATOR_SIGN_IN_REDIRECT_URIS": json.dumps([advisor_callback(settings)]),
            **(emulator_secrets(found) if found else {}),
        },
    )
    notifications_url = settings.base_url("notifications")
    stack.start(
        "smtp-sink",
        "visio-rdv-smtp-sink",
        {
            "SMTP_SINK_HOST": host,
            "SMTP_SINK_PORT": str(settings.smtp_port),
            "SMTP_SINK_MAIL_DIR": str(var / "mail"),
            **(smtp_sink_env(ca) if production else bounce_env(settings, notifications_url)),
        },
    )
    # Not in production mode: the texts' and bounces' development tokens are refused there.
    sms_url = None if production else start_sms_emulator(stack)
    # Generous: on a loaded machine (a CI run beside other stacks) a start can take a while.
    wait_for_port(host, settings.graph_port, 90, stack.process("graph-emulator"))
    wait_for_port(host, settings.smtp_port, 90, stack.process("smtp-sink"))
    if sms_url is not None:
        wait_for_port(host, settings.sms_port, 90, stack.process("sms-emulator"))
    say(
        f"Graph + Entra ID emulator: {graph_base}; SMTP sink: {host}:{settings.smtp_port}"
        + (f"; SMS emulator: {sms_url}" if sms_url else "")
    )
    return graph_base, sms_url


def _say_ready(stack: Stack, api_key: str, sms_url: str | None, recorded: LocalStack) -> None:
    settings = stack.settings
    var = settings.var_dir
    booking = settings.base_url("booking")
    admin = f"http://{settings.host}:{settings.booking_port + 1000}"
    say(f"booking API: {booking} (OpenAPI and /metrics on its admin port: {admin}/docs)")
    say(f"development API key (also in {var / 'dev-api-key'}): {api_key}")
    say(f"emails land in {var / 'mail'}; logs in {stack.logs}")
    if sms_url is not None:
        say(
            f"text messages: {sms_url.removesuffix('/v3')}/_emulator/messages; emails to "
            f"{' or '.join(settings.bounce_later)} bounce later "
            f"(DSNs in {var / 'mail' / 'bounces'})"
        )
    say(
        f"recorded in {recorded.path} (yours only: it holds the database owner's connection); "
        "visio-rdv commands in other terminals of this checkout talk to this stack"
    )
    say("ready — Ctrl-C stops everything")


def refuse_a_second_stack(var: Path) -> None:
    """A second `up` on the same var/ would stop the first one's PostgreSQL (as if left over by
    a killed run) and overwrite its stack file: refuse, saying which stack runs."""
    running = read_stack_file(var / STACK_FILE)
    if running is not None and running.running():
        raise RuntimeError(
            f"{running.describe()} is running: stop it first (Ctrl-C in its terminal), or give "
            "this one another VISIO_VAR_DIR and other ports"
        )


def record_stack(
    stack: Stack, owner_dsn: str, bootstrap: str, sms_url: str | None = None
) -> LocalStack:
    """Write var/stack.json: how the commands of other terminals reach this stack."""
    settings = stack.settings
    var, host = settings.var_dir, settings.host
    processes = [service.name for service in SERVICES] + ["alerts"]
    recorded = LocalStack(
        pid=os.getpid(),
        process_started=process_started(os.getpid()),
        started_at=stack.started_at,
        var_dir=var,
        kafka_bootstrap_servers=bootstrap,
        broker="external" if settings.kafka_bootstrap_servers else "tansu",
        topic_prefix=settings.topic_prefix,
        database_url=SecretStr(owner_dsn),
        database_label=(
            f"embedded, data in {var / 'pg'}" if stack.postgres else database_label(owner_dsn)
        ),
        http={
            **{name: settings.base_url(name) for name in processes},
            LAG_EXPORTER: f"http://{host}:{settings.lag_exporter_port}",
        },
        admin={  # always plain HTTP, on the internal network
            **{name: f"http://{host}:{settings.service_port(name) + 1000}" for name in processes},
            LAG_EXPORTER: f"http://{host}:{settings.lag_exporter_port}",
        },
        graph_url=f"https://{host}:{settings.graph_port}",
        smtp=f"{host}:{settings.smtp_port}",
        sms_emulator=sms_url,
        api_key_file=var / "dev-api-key",
        link_keys_file=var / "link-keys",
        mail_dir=var / "mail",
        consent_var_dir=var / "consent",
        log_dir=stack.logs,
    )
    recorded.write()
    stack.recorded = recorded
    return recorded


def ensure_link_keys(path: Path) -> str:
    """The self-service links' key ring of this var/ (kept, so links in emails already sent
    still open after a restart); delete the file to revoke them all."""
    if path.exists():
        return path.read_text().strip()
    keys = LinkKeys.generate("dev1")
    path.write_text(keys + "\n")
    path.chmod(0o600)
    return keys


def ensure_dev_api_key(owner_dsn: str, path: Path) -> str:
    """Reuse var/dev-api-key if the database still knows it, else create one and write it."""
    existing = path.read_text().strip() if path.exists() else None
    key = asyncio.run(_dev_api_key(owner_dsn, existing))
    if key != existing:
        path.write_text(key + "\n")
        path.chmod(0o600)
    return key


async def _dev_api_key(owner_dsn: str, existing: str | None) -> str:
    conn = await asyncpg.connect(owner_dsn)
    try:
        if existing and await API_KEYS.is_valid(conn, existing):
            return existing
        return await API_KEYS.create(
            conn, "development (visio-rdv up)", ["appointments:write", "appointments:read"]
        )
    finally:
        await conn.close()


def settings_help() -> str:
    """The settings `up` reads, one per line, for `visio-rdv up --help`."""
    lines = ["settings (environment variables), read at start:"]
    for name, setting in UpSettings.model_fields.items():
        alias = setting.validation_alias
        names = alias.choices if isinstance(alias, AliasChoices) else [f"VISIO_{name.upper()}"]
        value = setting.default
        default = "" if value in (None, PydanticUndefined) else f" (default {value})"
        lines.append(f"  {' or '.join(map(str, names))}{default}")
        lines += textwrap.wrap(
            str(setting.description), 96, initial_indent="      ", subsequent_indent="      "
        )
    lines += ["", *textwrap.wrap(
        "The processes it starts also read their own settings from this environment: "
        "VISIO_EMAIL_LATE_AFTER_MINUTES (the alerts process), BOOKING_*, MEETINGS_*, "
        "NOTIFICATIONS_*, CONSENT_*, ALERTS_* (docs/local-stack.md).", 98
    )]  # fmt: skip
    return "\n".join(lines)


def main_up(production: bool = False) -> int:
    settings = UpSettings()
    if production:
        settings.environment = "production"
    if settings.production:
        # migrate (in this process) reads it too, and the processes `up` starts inherit it.
        os.environ["VISIO_ENVIRONMENT"] = "production"
    return run_up(settings)


if __name__ == "__main__":
    sys.exit(main_up())
