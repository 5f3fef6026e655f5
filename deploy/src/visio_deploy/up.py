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
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Literal

import asyncpg
from pydantic import AliasChoices, Field, SecretStr
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings, SettingsConfigDict
from visio_booking.keys import API_KEYS
from visio_fakes.devca import ensure_dev_ca
from visio_fakes.graph_emulator.settings import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_TENANT_ID,
)
from visio_fakes.postgres import EmbeddedPostgres
from visio_fakes.processes import spawn, stop, wait_for_port
from visio_fakes.sms_emulator import API_KEY as SMS_EMULATOR_API_KEY
from visio_fakes.tansu import start_tansu
from visio_notifications.settings import DEV_BOUNCE_TOKEN, DEV_SMS_RECEIPT_TOKEN
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
    alerts_env,
    common_env,
    ensure_secrets,
    service_env,
    smtp_sink_env,
)
from visio_deploy.readiness import expected_partitions, wait_ready
from visio_deploy.stack import LOCAL_PARTNERS, SERVICES


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


@dataclass
class Stack:
    settings: UpSettings
    processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    postgres: EmbeddedPostgres | None = None
    # Extra environment per process name, on top of what `bring_up` gives (the proof's faults).
    extra_env: dict[str, dict[str, str]] = field(default_factory=dict)
    # How each process was started, so the proof can SIGKILL one and start it again.
    commands: dict[str, tuple[list[str], dict[str, str]]] = field(default_factory=dict)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # var/stack.json once the stack is ready; removed first thing when it stops.
    recorded: LocalStack | None = None

    @property
    def logs(self) -> Path:
        return self.settings.var_dir / "log"

    def start(self, name: str, script: str, env: dict[str, str] | None = None) -> None:
        self.launch(name, [installed_script(script)], env)

    def launch(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        full_env = {**(env or {}), **self.extra_env.get(name, {})}
        self.commands[name] = (argv, full_env)
        self.processes.append((name, spawn(argv, env=full_env, log=self.logs / f"{name}.log")))

    def process(self, name: str) -> subprocess.Popen[bytes]:
        return next(process for known, process in self.processes if known == name)

    def kill(self, name: str) -> None:
        """SIGKILL the process (and its group): no shutdown code runs, as in a crash."""
        process = self.process(name)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(10)

    def stop_one(self, name: str) -> None:
        """SIGTERM one process and wait for it to end: its shutdown code runs."""
        stop(self.process(name))

    def replicate(self, name: str, replica: str, env: dict[str, str]) -> None:
        """Start one more copy of a process, as it was started, with `env` on top (its own
        HTTP port): the same consumer group, so the partitions are shared."""
        argv, first_env = self.commands[name]
        self.launch(replica, argv, {**first_env, **env})

    def restart(self, name: str) -> None:
        """Start a process again the way it was first started, in its place in the list."""
        argv, env = self.commands[name]
        index = next(i for i, (known, _) in enumerate(self.processes) if known == name)
        log = self.logs / f"{name}.log"
        self.processes[index] = (name, spawn(argv, env=env, log=log))

    def stop_all(self) -> None:
        if self.recorded is not None:
            self.recorded.remove()
            self.recorded = None
        for name, process in reversed(self.processes):
            say(f"stopping {name}")
            stop(process)
        self.processes.clear()
        if self.postgres is not None:
            say("stopping PostgreSQL")
            self.postgres.stop()
            self.postgres = None

    def check_alive(self) -> None:
        for name, process in self.processes:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with code {process.returncode}; see {self.logs / name}.log"
                )


def installed_script(name: str) -> str:
    """A console script of this environment, found beside its Python even if PATH lacks it."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def say(message: str) -> None:
    print(f"visio-rdv: {message}", flush=True)


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
    host = settings.host

    owner_dsn = settings.database_url
    if owner_dsn:
        say("PostgreSQL: DATABASE_URL")
    else:
        stack.postgres = EmbeddedPostgres(var / "pg")
        owner_dsn = stack.postgres.start()
        say(f"PostgreSQL: embedded, data in {var / 'pg'}")
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
    waiver = production and broker == "tansu"
    if waiver:
        say(
            "PRODUCTION CHECKS WAIVED FOR THE LOCAL BROKER (VISIO_PRODUCTION_LOCAL_BROKER_WAIVER): "
            "tansu has no TLS, no SASL, no replication, no idempotent producer — "
            "this stack is not a production deployment"
        )
    everyone = common_env(waiver=waiver) if production else {}

    ca = ensure_dev_ca(var / "dev-ca")
    graph_base = f"https://{host}:{settings.graph_port}"
    stack.start(
        "graph-emulator",
        "visio-rdv-graph-emulator",
        {
            "GRAPH_EMULATOR_HOST": host,
            "GRAPH_EMULATOR_PORT": str(settings.graph_port),
            "GRAPH_EMULATOR_CA_DIR": str(var / "dev-ca"),
            **({"GRAPH_EMULATOR_CLIENT_SECRET": found.graph_client_secret} if found else {}),
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

    link_keys = ensure_link_keys(var / "link-keys")
    booking_url = settings.base_url("booking")
    consent_url = settings.base_url("consent")
    for service in SERVICES:
        prefix = service.env_prefix
        env = {
            f"{prefix}KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            f"{prefix}TOPIC_PREFIX": settings.topic_prefix,
            f"{prefix}DATABASE_URL": dsns[service.name],
            f"{prefix}HTTP_HOST": host,
            f"{prefix}HTTP_PORT": str(settings.service_port(service.name)),
        }
        if service.name == "meetings":
            env |= {
                "MEETINGS_GRAPH_BASE_URL": f"{graph_base}/v1.0",
                "MEETINGS_AUTHORITY": f"{graph_base}/{DEFAULT_TENANT_ID}",
                "MEETINGS_CLIENT_ID": DEFAULT_CLIENT_ID,
                "MEETINGS_CLIENT_SECRET": DEFAULT_CLIENT_SECRET,
                "MEETINGS_CA_BUNDLE": str(ca.bundle_path),
            }
        if service.name in ("booking", "notifications", "consent"):
            env[f"{prefix}LINK_KEYS"] = link_keys
        if service.name == "booking":
            env["BOOKING_PARTNERS"] = json.dumps(list(LOCAL_PARTNERS))
            env["BOOKING_CONSENT_PUBLIC_URL"] = consent_url  # the CGU link: /cgu/<version>
        if service.name == "notifications":
            env |= {
                "NOTIFICATIONS_SMTP_HOST": host,
                "NOTIFICATIONS_SMTP_PORT": str(settings.smtp_port),
                "NOTIFICATIONS_BOOKING_PUBLIC_URL": booking_url,
                "NOTIFICATIONS_CONSENT_PUBLIC_URL": consent_url,
                # An erasure deletes the person's emails from the sink too.
                "NOTIFICATIONS_MAIL_SINK_DIR": str(var / "mail"),
            }
            if sms_url is not None:
                env |= sms_env(notifications_url, sms_url)
        if service.name == "consent":
            # The dev checkpoint-signing key and the checkpoint file live with the rest of var/.
            env |= {
                "CONSENT_VAR_DIR": str(var / "consent"),
                "CONSENT_BOOKING_PUBLIC_URL": booking_url,
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
            env |= everyone | service_env(service.name, found, ca)
        stack.start(service.name, service.script, env)
    start_alerts(stack, owner_dsn, bootstrap, everyone | (alerts_env(found, ca) if found else {}))
    start_lag_exporter(stack, bootstrap, everyone)
    start_healer(stack, bootstrap, graph_base, ca.bundle_path, everyone)

    kafka = ServiceSettings(kafka_bootstrap_servers=bootstrap, topic_prefix=settings.topic_prefix)
    wait_ready(stack, asyncio.run(expected_partitions(kafka, LOCAL_PARTNERS)), say)
    recorded = record_stack(stack, owner_dsn, bootstrap, sms_url)
    booking = settings.base_url("booking")
    admin = f"http://{host}:{settings.booking_port + 1000}"
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
