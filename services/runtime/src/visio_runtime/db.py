"""PostgreSQL: pools on the service's restricted role, and numbered-SQL migrations applied with
an owner connection. Each service owns one schema, owned by a NOLOGIN role; the service logs in
as a separate role that holds only the grants its migrations give it."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
from visio_shared import Envelope

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SchemaSpec:
    """What one service's migrations need: its schema, its roles, its numbered SQL files."""

    schema: str
    sql_dir: Path

    @property
    def owner_role(self) -> str:
        return f"visio_{self.schema}_owner"

    @property
    def service_role(self) -> str:
        return f"visio_{self.schema}"


async def create_pool(
    dsn: str,
    schema: str,
    min_size: int = 1,
    max_size: int = 5,
    setup: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
) -> asyncpg.Pool:
    """The service's pool. A connection going back to it is not reset: asyncpg's default reset
    is a round trip on every release (`pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET
    ALL`, about 80 µs of client and server CPU, several times per appointment), for state no
    pooled handling leaves behind — settings are `SET LOCAL`, cursors live in a transaction,
    LISTEN has its own connection, and the session locks (`visio_runtime.locks`) are let go by
    whoever takes them. An open transaction is still rolled back on release (asyncpg does that
    whatever the reset). `setup` is asyncpg's: run on each connection as it is acquired."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings={"search_path": schema, "application_name": f"visio-rdv-{schema}"},
        reset=_keep_session,
        setup=setup,
    )
    assert pool is not None
    return pool


async def _keep_session(conn: asyncpg.Connection) -> None:
    """No reset query on release (see `create_pool`)."""


def role_dsn(owner_dsn: str, role: str, password: str) -> str:
    """The owner's connection string with the service role's credentials in place."""
    parts = urlsplit(owner_dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{quote(role)}:{quote(password)}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


async def mark_processed(conn: asyncpg.Connection, event_id: uuid.UUID, event_type: str) -> bool:
    """Record an event as processed, in the caller's transaction; False if it already was.

    The effect and this marker commit together, so a redelivered event is recognised and skipped.
    """
    status: str = await conn.execute(
        "INSERT INTO processed_events (event_id, event_type) VALUES ($1, $2) "
        "ON CONFLICT (event_id) DO NOTHING",
        event_id,
        event_type,
    )
    return status.endswith(" 1")


async def mark_processed_many(
    conn: asyncpg.Connection, events: Sequence[Envelope]
) -> set[uuid.UUID]:
    """`mark_processed` for a batch, in one statement: the ids of the events marked now (those
    not in the set were processed before). Same transaction rule: markers and effects commit
    together."""
    if not events:
        return set()
    rows = await conn.fetch(
        "INSERT INTO processed_events (event_id, event_type) "
        "SELECT * FROM unnest($1::uuid[], $2::text[]) "
        "ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
        [event.event_id for event in events],
        [event.event_type for event in events],
    )
    return {row["event_id"] for row in rows}


def _lock_key(schema: str) -> int:
    return int.from_bytes(
        hashlib.sha256(f"visio-rdv:migrate:{schema}".encode()).digest()[:8], "big", signed=True
    )


async def migrate(
    owner_dsn: str, spec: SchemaSpec, service_password: str, *, set_password: bool = False
) -> list[str]:
    """Apply the numbered SQL files not yet applied; safe to run twice and from several replicas.

    The service role is created with `service_password`; an existing role's password is left as
    it is (the operator may have rotated it), unless `set_password` asks for it explicitly."""
    conn = await asyncpg.connect(owner_dsn)
    applied: list[str] = []
    try:
        # Roles are cluster-wide: serialise their creation across databases too.
        await conn.execute("SELECT pg_advisory_lock($1)", _lock_key("roles"))
        try:
            await _ensure_roles(conn, spec, service_password, set_password)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _lock_key("roles"))
        await conn.execute("SELECT pg_advisory_lock($1)", _lock_key(spec.schema))
        try:
            await conn.execute(
                f'CREATE SCHEMA IF NOT EXISTS "{spec.schema}" AUTHORIZATION "{spec.owner_role}"'
            )
            await conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{spec.schema}".schema_migrations ('
                "version int PRIMARY KEY, name text NOT NULL, "
                "applied_at timestamptz NOT NULL DEFAULT now())"
            )
            await conn.execute(
                f'ALTER TABLE "{spec.schema}".schema_migrations OWNER TO "{spec.owner_role}"'
            )
            done = {
                row["version"]
                for row in await conn.fetch(
                    f'SELECT version FROM "{spec.schema}".schema_migrations'
                )
            }
            for path in sorted(spec.sql_dir.glob("*.sql")):
                version = int(path.name.split("_", 1)[0])
                if version in done:
                    continue
                sql = path.read_text(encoding="utf-8")
                async with conn.transaction():
                    # Objects are created as the owner role, never as the login that migrates.
                    await conn.execute(f'SET LOCAL ROLE "{spec.owner_role}"')
                    await conn.execute(f'SET LOCAL search_path = "{spec.schema}"')
                    await conn.execute(sql)
                    await conn.execute("RESET ROLE")
                    await conn.execute(
                        f'INSERT INTO "{spec.schema}".schema_migrations (version, name) '
                        "VALUES ($1, $2)",
                        version,
                        path.name,
                    )
                applied.append(path.name)
                log.info("%s: applied %s", spec.schema, path.name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _lock_key(spec.schema))
    finally:
        await conn.close()
    return applied


async def _ensure_roles(
    conn: asyncpg.Connection, spec: SchemaSpec, service_password: str, set_password: bool
) -> None:
    existing = {
        row["rolname"]
        for row in await conn.fetch(
            "SELECT rolname FROM pg_roles WHERE rolname = ANY($1::text[])",
            [spec.owner_role, spec.service_role],
        )
    }
    if spec.owner_role not in existing:
        await conn.execute(f'CREATE ROLE "{spec.owner_role}" NOLOGIN')
    # The password is the operator's: given when the role is created, changed only when asked
    # (a rotation), never put back to what this run was given.
    if spec.service_role not in existing:
        await conn.execute(
            f'CREATE ROLE "{spec.service_role}" LOGIN PASSWORD {_literal(service_password)}'
        )
        log.info("%s: role %s created", spec.schema, spec.service_role)
    elif set_password:
        await conn.execute(
            f'ALTER ROLE "{spec.service_role}" PASSWORD {_literal(service_password)}'
        )
        log.info("%s: password of %s set, as asked", spec.schema, spec.service_role)
    # The migrating login must be able to act as the owner role.
    await conn.execute(f'GRANT "{spec.owner_role}" TO CURRENT_USER')
    database = await conn.fetchval("SELECT current_database()")
    await conn.execute(f'GRANT CONNECT ON DATABASE "{database}" TO "{spec.service_role}"')


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
