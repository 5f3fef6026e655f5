"""Settings every service shares. Each service subclasses `ServiceSettings` with its own env
prefix (`BOOKING_`, `MEETINGS_`, …), so one environment can hold all four side by side."""

from __future__ import annotations

import ssl
import sys
from functools import lru_cache
from pathlib import Path
from typing import ClassVar, Literal, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import (
    AliasChoices,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from visio_shared.links import KeyPurpose, LinkKeys

from visio_runtime import defects, production
from visio_runtime.production import Finding


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", env_file=None)

    # `production` refuses every development-only setting (visio_runtime.production); read by
    # every process under the same name, whatever its own prefix.
    environment: Literal["development", "production"] = Field(
        default="development",
        validation_alias=AliasChoices(production.ENVIRONMENT_ENV, "environment"),
    )
    production_local_broker_waiver: bool = Field(
        default=False,
        validation_alias=AliasChoices(
            production.LOCAL_BROKER_WAIVER_ENV, "production_local_broker_waiver"
        ),
        description="Production mode on a broker of this machine (tansu): the Kafka checks are "
        "logged loudly instead of enforced. Refused with any other broker.",
    )

    # Kafka
    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Kafka brokers, host:port, comma-separated."
    )
    kafka_enable_idempotence: bool = Field(
        default=False,
        description="Idempotent producer: true on Apache Kafka; the local tansu broker has no "
        "InitProducerId.",
    )
    kafka_producer_batch_bytes: int = Field(
        default=512 * 1024,
        ge=16 * 1024,
        le=1_000_000,
        description="The producer's batch per partition, in bytes: a handler's produce wave "
        "(hundreds of events) fits in one, where a sender finding its batch full waits for it "
        "to drain and retries. At most the brokers' message.max.bytes (1 MB by default).",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="How the clients reach the brokers."
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] = Field(
        default="SCRAM-SHA-512", description="SASL mechanism, with SASL_SSL."
    )
    kafka_sasl_username: str | None = Field(
        default=None, description="This service's own Kafka principal."
    )
    kafka_sasl_password: SecretStr | None = Field(default=None, description="Its password.")
    kafka_ssl_cafile: Path | None = Field(
        default=None, description="CA bundle that signed the brokers' certificates."
    )
    kafka_allow_sasl_without_tls: bool = Field(
        default=False,
        description="Accept SASL_PLAINTEXT (credentials in clear): a deliberate choice only.",
    )
    topic_prefix: str = Field(
        default="visio-rdv", description="First part of every topic and consumer group name."
    )
    topic_partitions: int = Field(default=6, description="Partitions of the topics it creates.")
    topic_replication_factor: int = Field(
        default=1, description="Replication factor of the topics it creates (3 in production)."
    )
    topic_min_insync_replicas: int | None = Field(
        default=None,
        ge=1,
        description="`min.insync.replicas` given to the topics it creates (unset: the broker's; "
        "2 or more in production).",
    )
    max_poll_interval_ms: int = Field(
        default=300_000, description="Kafka's max.poll.interval.ms for this service's consumer."
    )
    topic_retention_days: float = Field(
        default=7.0,
        description="Personal data on the broker ends too: `retention.ms` given to every topic "
        "this service creates (0: the broker's default).",
    )
    dlq_retention_days: float = Field(
        default=7.0, description="`retention.ms` of this service's dead-letter topic."
    )
    topic_segment_days: float = Field(
        default=1.0,
        description="`segment.ms` of every topic this service creates: Kafka deletes whole "
        "segments, so a record (an erased person's details) can outlive its retention by up "
        "to this long (0: the broker's default, 7 days on Apache Kafka).",
    )
    topic_configs_enabled: bool = Field(
        default=True,
        description="Give topic configs at creation; some brokers refuse them: turn off there.",
    )

    # Records handled at once by a service's consumer, across appointments; each appointment's
    # events stay in order (visio_runtime.lanes). 1: one at a time.
    consumer_concurrency: int = Field(default=16, ge=1)
    # Bytes fetched per partition at a time. The client hands a fetched chunk out whole before
    # the next partition's, so with 1 MiB chunks a deep backlog on one topic starved the other
    # topic of the same subscriber (notifications' MeetingReady waited behind ~700-record chunks
    # of AppointmentRequested: no email for minutes in the bench). Small chunks take turns.
    consumer_partition_fetch_bytes: int = Field(default=64 * 1024, ge=1024)
    consumer_batch_max: int = Field(
        default=500,
        ge=1,
        description="Batch handlers (visio_runtime.batches): the most events in one batch.",
    )
    consumer_batch_window_ms: float = Field(
        default=10.0,
        ge=0,
        description="How long a batch waits for more after its first event (the records of one "
        "poll arrive well within it), when a slot is free; while every slot is taken, it fills "
        "until one ends.",
    )
    gc_young_threshold: int = Field(
        default=10_000,
        ge=700,
        le=1_000_000,
        description="Allocations of container objects between two young collections of "
        "CPython's garbage collector (its default is 700): most of a batch's objects are "
        "freed before one runs (visio_runtime.heap).",
    )
    consumer_batch_parallel: int = Field(
        default=2,
        ge=1,
        description="Batches of one handler run at once (the next fills meanwhile, and starts "
        "when one ends).",
    )
    # Retry of transient failures: the partition is paused (never slept on) between attempts,
    # so the delays may grow past max.poll.interval.ms without the consumer leaving its group.
    retry_attempts: int = Field(
        default=5, description="Attempts of a transiently failing record before its dead letter."
    )
    retry_initial_delay_s: float = Field(
        default=0.2, description="Wait before the second attempt; it doubles at each attempt."
    )
    retry_max_delay_s: float = Field(default=5.0, description="The longest wait between attempts.")
    # A dead letter must fit on the broker whatever the record: a longer value is cut to this
    # (said in the letter's `dlq.truncated` header; such a letter is read, never replayed).
    dlq_max_value_bytes: int = Field(default=256 * 1024, ge=1024)

    database_url: SecretStr = Field(
        default=SecretStr("postgresql://127.0.0.1:5432/visio"),
        description="PostgreSQL, as the service's own restricted role.",
    )
    database_password_file: Path | None = Field(
        default=None,
        description="The role's password from a file (a mounted secret): it replaces the URL's.",
    )
    database_pool_min: int = Field(default=1, description="Connections kept open.")
    database_pool_max: int = Field(default=5, description="Connections at most.")

    http_host: str = Field(default="127.0.0.1", description="Address the public port binds.")
    http_port: int = Field(default=8080, description="The public port: the API, the pages, health.")
    http_tls_certfile: Path | None = Field(
        default=None,
        description="Serve the public port in TLS with this certificate (else TLS ends at the "
        "reverse proxy the public URLs name).",
    )
    http_tls_keyfile: Path | None = Field(default=None, description="Its private key.")
    admin_host: str = Field(
        default="127.0.0.1", description="Address of the admin port: the internal network only."
    )
    admin_port: int | None = Field(
        default=None,
        ge=0,
        description="The admin port (/metrics, /docs, /openapi.json, health); unset, the public "
        "port + 1000.",
    )

    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_format: Literal["json", "text"] = Field(
        default="json", description="One JSON object per line, or text for a person."
    )
    # A warning or error repeated word for word is written once in this many seconds, the next
    # line saying how many were held back (0: every one written).
    log_repeat_window_s: float = Field(default=60.0, ge=0)

    # OpenTelemetry: off unless asked. On, the trace context travels in Kafka headers
    # (`traceparent`) and each log line carries its trace id.
    tracing_enabled: bool = Field(default=False)
    tracing_exporter: Literal["none", "console", "otlp"] = Field(
        default="none",
        description="Where spans go: 'none' propagates only; 'console' prints them; 'otlp' "
        "sends them over OTLP/HTTP (protobuf) to tracing_otlp_endpoint.",
    )
    tracing_otlp_endpoint: str | None = Field(
        default=None,
        description="The OTLP/HTTP traces URL of the collector, e.g. "
        "http://otel-collector:4318/v1/traces (unset: the OTEL_EXPORTER_OTLP_* variables).",
    )

    # Production refuses on any finding not waived; the waived ones are logged at each start.
    _waived: list[Finding] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _admin_port(self) -> ServiceSettings:
        if self.admin_port is None:
            self.admin_port = self.http_port + 1000
        return self

    @model_validator(mode="after")
    def _read_password_file(self) -> ServiceSettings:
        if self.database_password_file is not None:
            password = self.database_password_file.read_text(encoding="utf-8").strip()
            parts = urlsplit(self.database_url.get_secret_value())
            user = quote(parts.username or "", safe="")
            netloc = f"{user}:{quote(password, safe='')}@{parts.netloc.rsplit('@', 1)[-1]}"
            self.database_url = SecretStr(urlunsplit(parts._replace(netloc=netloc)))
        return self

    @model_validator(mode="after")
    def _production_mode(self) -> ServiceSettings:
        # The base class alone is a holder of Kafka settings for tools (`up`, the bench), not a
        # process's settings: production is about what a process runs with.
        if self.environment == "production" and type(self) is not ServiceSettings:
            self._waived = production.enforce(self, self.production_findings())
        return self

    def production_findings(self) -> list[Finding]:
        """What production mode refuses in these settings. A service extends it with its own
        checks (`[*super().production_findings(), …]`)."""
        findings = [
            *production.kafka_findings(self),
            *production.switch_findings(
                self,
                {"kafka_allow_sasl_without_tls": True},
                "a switch for tests: credentials would travel in clear",
            ),
            *production.public_url_findings(self),
            *production.database_findings(self),
            *defects.findings(),
        ]
        if isinstance(self, LinkSettings):
            findings += self.link_findings()
        return findings

    @property
    def waived_production_checks(self) -> list[Finding]:
        return list(self._waived)

    @model_validator(mode="after")
    def _refuse_sasl_in_clear(self) -> ServiceSettings:
        if (
            self.kafka_security_protocol == "SASL_PLAINTEXT"
            and not self.kafka_allow_sasl_without_tls
        ):
            raise ValueError(
                "KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT sends credentials in clear; use SASL_SSL "
                "or set KAFKA_ALLOW_SASL_WITHOUT_TLS=true deliberately"
            )
        return self

    def kafka_ssl_context(self) -> ssl.SSLContext | None:
        if self.kafka_security_protocol not in ("SSL", "SASL_SSL"):
            return None
        context = ssl.create_default_context()
        if self.kafka_ssl_cafile:
            context.load_verify_locations(cafile=str(self.kafka_ssl_cafile))
        return context


class LinkSettings(BaseSettings):
    """The self-service links' key ring, for the services that sign or read them (notifications,
    booking, consent); each takes it under its own prefix (`BOOKING_LINK_KEYS`, …) and keeps
    only the keys of `LINK_PURPOSES`, what it signs or verifies (visio_shared.links)."""

    model_config = SettingsConfigDict(extra="ignore", env_file=None)

    # What this service signs or verifies: a ring holding other purposes' keys is refused in
    # production, and in development those keys are dropped at start.
    LINK_PURPOSES: ClassVar[frozenset[KeyPurpose]] = frozenset()

    link_keys: SecretStr | None = Field(
        default=None,
        description="'id.purpose:key' entries (or, in development, 'id:secret' masters from "
        "which each purpose's key is derived), comma-separated: per purpose the first signs, "
        "all verify. Rotate by putting a new key first; drop a key to revoke every link it "
        "signed. Unset: emails carry no self-service links and the pages answer 404.",
    )

    @field_validator("link_keys")
    @classmethod
    def _readable(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            LinkKeys.parse(value.get_secret_value())
        return value

    def link_ring(self) -> LinkKeys | None:
        """The ring, with only the keys of what this service signs or verifies."""
        if self.link_keys is None:
            return None
        return _ring(self.link_keys.get_secret_value(), self.LINK_PURPOSES)

    def link_findings(self) -> list[Finding]:
        """Production: no master key (it derives every purpose's key), no key of a purpose
        this service neither signs nor verifies, no development key."""
        if self.link_keys is None:
            return []
        setting = production.env_name(self, "link_keys")
        text = self.link_keys.get_secret_value()
        ring = LinkKeys.parse(text)
        findings: list[Finding] = []
        if production.is_development_secret(text):
            findings.append(Finding(setting, "holds a development key (marked DEV-ONLY)"))
        if ring.masters:
            findings.append(
                Finding(
                    setting,
                    f"holds master key(s) {', '.join(ring.masters)}, from which every purpose's "
                    "key derives: give this service its own keys (visio-rdv keys derive)",
                )
            )
        foreign = sorted(purpose.value for purpose in ring.purposes() - self.LINK_PURPOSES)
        needed = ", ".join(sorted(purpose.value for purpose in self.LINK_PURPOSES))
        if foreign and not ring.masters:
            findings.append(
                Finding(
                    setting,
                    f"holds keys for {', '.join(foreign)}, which this service neither signs "
                    f"nor verifies (it needs {needed})",
                )
            )
        return findings


SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


def load_settings(kind: type[SettingsT], program: str) -> SettingsT:
    """A console script's settings from the environment; a refusal (production mode's among
    them) ends the process with status 2 and one line per refused setting, not a traceback.
    Light on imports on purpose: a console script reads its settings before it imports its
    app, so a refused start costs little."""
    try:
        return kind()
    except ValidationError as exc:
        reasons = [
            str(error["ctx"]["error"]) if "error" in error.get("ctx", {}) else error["msg"]
            for error in exc.errors()
        ]
        print(f"{program}: {'; '.join(reasons)}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


@lru_cache(maxsize=8)
def _ring(text: str, purposes: frozenset[KeyPurpose]) -> LinkKeys:
    """Parsed and its keys derived once per setting (a frozen ring, only ever read): every
    email signs its links with it, and deriving cost a fifth of the signing."""
    return LinkKeys.parse(text).restricted_to(purposes)
