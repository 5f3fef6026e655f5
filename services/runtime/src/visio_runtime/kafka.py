"""Speaking Kafka the Visio RDV way: one broker factory, topics created explicitly at start."""

from __future__ import annotations

import logging
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from faststream.kafka import KafkaBroker
from faststream.security import (
    BaseSecurity,
    SASLPlaintext,
    SASLScram256,
    SASLScram512,
)

from visio_runtime.settings import ServiceSettings

log = logging.getLogger(__name__)


def kafka_security(settings: ServiceSettings) -> BaseSecurity | None:
    context = settings.kafka_ssl_context()
    if settings.kafka_security_protocol in ("PLAINTEXT", "SSL"):
        return BaseSecurity(ssl_context=context) if context else None
    username = settings.kafka_sasl_username or ""
    password = (
        settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
    )
    kind = {
        "SCRAM-SHA-256": SASLScram256,
        "SCRAM-SHA-512": SASLScram512,
        "PLAIN": SASLPlaintext,
    }[settings.kafka_sasl_mechanism]
    return kind(username, password, ssl_context=context)


def _client_security_kwargs(settings: ServiceSettings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    context = settings.kafka_ssl_context()
    if context:
        kwargs["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        kwargs["sasl_plain_password"] = (
            settings.kafka_sasl_password.get_secret_value()
            if settings.kafka_sasl_password
            else None
        )
    return kwargs


def make_broker(settings: ServiceSettings, client_id: str) -> KafkaBroker:
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        security=kafka_security(settings),
        graceful_timeout=10.0,
        logger=logging.getLogger(f"visio.{client_id}.kafka"),
    )


async def ensure_topics(settings: ServiceSettings, names: list[str]) -> list[str]:
    """Create the topics this service touches, with their partitions; return those created.

    Explicit, because tansu (and a misconfigured Kafka) silently auto-creates a topic on publish
    with one partition, which would break per-appointment ordering at scale-out.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers, **_client_security_kwargs(settings)
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in dict.fromkeys(names) if name not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [
                        NewTopic(
                            name,
                            num_partitions=settings.topic_partitions,
                            replication_factor=settings.topic_replication_factor,
                        )
                        for name in missing
                    ]
                )
            except TopicAlreadyExistsError:
                # Another replica won the race; the topic is there, which is all we need.
                pass
            log.info("created topics %s", missing)
        return missing
    finally:
        await admin.close()


def admin_client(settings: ServiceSettings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers, **_client_security_kwargs(settings)
    )
