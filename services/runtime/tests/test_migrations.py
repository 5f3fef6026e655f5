"""Migrations: roles and grants created, objects owned by the NOLOGIN owner role, safe to run
twice and concurrently."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
from visio_runtime.db import SchemaSpec, mark_processed, migrate, role_dsn


@pytest.fixture
def spec(tmp_path: Path) -> SchemaSpec:
    (tmp_path / "001_init.sql").write_text(
        "CREATE TABLE processed_events (event_id uuid PRIMARY KEY, event_type text NOT NULL,"
        " processed_at timestamptz NOT NULL DEFAULT now());\n"
        "GRANT USAGE ON SCHEMA probe TO visio_probe;\n"
        "GRANT SELECT, INSERT ON processed_events TO visio_probe;\n"
    )
    (tmp_path / "002_more.sql").write_text("CREATE TABLE notes (id int PRIMARY KEY);\n")
    return SchemaSpec(schema="probe", sql_dir=tmp_path)


async def test_migrate_twice_and_concurrently_applies_each_file_once(
    fresh_database: str, spec: SchemaSpec
) -> None:
    results = await asyncio.gather(*(migrate(fresh_database, spec, "pw") for _ in range(3)))
    assert sorted(name for applied in results for name in applied) == [
        "001_init.sql",
        "002_more.sql",
    ]
    assert await migrate(fresh_database, spec, "pw") == []

    conn = await asyncpg.connect(fresh_database)
    try:
        owner = await conn.fetchval(
            "SELECT tableowner FROM pg_tables WHERE schemaname = 'probe' AND tablename = 'notes'"
        )
        assert owner == "visio_probe_owner"
        can_login = await conn.fetchval(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'visio_probe_owner'"
        )
        assert can_login is False
    finally:
        await conn.close()


async def test_the_service_role_has_only_its_grants(fresh_database: str, spec: SchemaSpec) -> None:
    await migrate(fresh_database, spec, "pw")
    conn = await asyncpg.connect(
        role_dsn(fresh_database, "visio_probe", "pw"), server_settings={"search_path": "probe"}
    )
    try:
        import uuid

        event_id = uuid.uuid4()
        async with conn.transaction():
            assert await mark_processed(conn, event_id, "X") is True
        assert await mark_processed(conn, event_id, "X") is False
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM processed_events")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("INSERT INTO notes VALUES (1)")
    finally:
        await conn.close()
