"""Settings every service shares. Each service subclasses `ServiceSettings` with its own env
prefix (`BOOKING_`, `MEETINGS_`, …), so one environment can hold all four side by side."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from visio_shared.links import LinkKeys


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", env_file=None)

    # Kafka
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_enable_idempotence: bool = False  # Apache Kafka: true; tansu has no InitProducerId
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_allow_sasl_without_tls: bool = False
    topic_prefix: str = "visio-rdv"
    topic_partitions: int = 6
    topic_replication_factor: int = 1
    max_poll_interval_ms: int = 300_000
    # Personal data on the broker ends too: `retention.ms` given to every topic this service
    # creates (0: the broker's default). Some brokers refuse topic configs: turn them off there.
    topic_retention_days: float = 7.0
    dlq_retention_days: float = 7.0
    topic_configs_enabled: bool = True

    # Retry of transient failures: the partition is paused (never slept on) between attempts,
    # so the delays may grow past max.poll.interval.ms without the consumer leaving its group.
    # Records handled at once by a service's consumer, across appointments; each appointment's
    # events stay in order (visio_runtime.lanes). 1: one at a time.
    consumer_concurrency: int = Field(default=16, ge=1)
    # Bytes fetched per partition at a time. The client hands a fetched chunk out whole before
    # the next partition's, so with 1 MiB chunks a deep backlog on one topic starved the other
    # topic of the same subscriber (notifications' MeetingReady waited behind ~700-record chunks
    # of AppointmentRequested: no email for minutes in the bench). Small chunks take turns.
    consumer_partition_fetch_bytes: int = Field(default=64 * 1024, ge=1024)
    # Batch handlers (visio_runtime.batches): the most events in one batch, how long a batch
    # waits for more after its first (the records of one poll arrive well within it), and how
    # many batches of one handler run at once (the next one fills meanwhile: a group commit).
    consumer_batch_max: int = Field(default=500, ge=1)
    consumer_batch_window_ms: float = Field(default=10.0, ge=0)
    consumer_batch_parallel: int = Field(default=2, ge=1)
    retry_attempts: int = 5
    retry_initial_delay_s: float = 0.2
    retry_max_delay_s: float = 5.0
    # A dead letter must fit on the broker whatever the record: a longer value is cut to this
    # (said in the letter's `dlq.truncated` header; such a letter is read, never replayed).
    dlq_max_value_bytes: int = Field(default=256 * 1024, ge=1024)

    # PostgreSQL: the service's own restricted role.
    database_url: SecretStr = SecretStr("postgresql://127.0.0.1:5432/visio")
    database_pool_min: int = 1
    database_pool_max: int = 5

    # HTTP (health, metrics, and booking's API)
    http_host: str = "127.0.0.1"
    http_port: int = 8080

    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    # A warning or error repeated word for word is written once in this many seconds, the next
    # line saying how many were held back (0: every one written).
    log_repeat_window_s: float = Field(default=60.0, ge=0)

    # OpenTelemetry: off unless asked. On, the trace context travels in Kafka headers
    # (`traceparent`) and each log line carries its trace id; spans go to `tracing_exporter`
    # ('none' propagates only; 'otlp' needs opentelemetry-exporter-otlp installed).
    tracing_enabled: bool = False
    tracing_exporter: Literal["none", "console", "otlp"] = "none"
    tracing_otlp_endpoint: str | None = None

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
    booking, consent); each takes it under its own prefix (`BOOKING_LINK_KEYS`, …)."""

    model_config = SettingsConfigDict(extra="ignore", env_file=None)

    link_keys: SecretStr | None = Field(
        default=None,
        description="'id:secret' pairs, comma-separated, secrets of 32+ characters: the first "
        "signs, all verify. Rotate by putting a new key first; drop a key to revoke every link "
        "it signed. Unset: emails carry no self-service links and the pages answer 404.",
    )

    @field_validator("link_keys")
    @classmethod
    def _readable(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            LinkKeys.parse(value.get_secret_value())
        return value

    def link_ring(self) -> LinkKeys | None:
        return None if self.link_keys is None else LinkKeys.parse(self.link_keys.get_secret_value())
