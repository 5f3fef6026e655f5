"""Passwords the operator owns: migrate gives a role it creates the service's own secret, never
puts an existing role's password back, and changes it only when asked (`--set-password`).

Roles are cluster-wide: the role here is one of its own (a throwaway schema), dropped at the end,
so the services' roles other tests log in with are never touched."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from visio_deploy.migrate import MissingPassword, service_password
from visio_runtime.db import SchemaSpec, migrate


@pytest.fixture
async def spec(tmp_path: Path, fresh_database: str) -> AsyncIterator[SchemaSpec]:
    (tmp_path / "001_init.sql").write_text("CREATE TABLE things (id int PRIMARY KEY);\n")
    spec = SchemaSpec(f"pw_{uuid.uuid4().hex[:10]}", tmp_path)
    yield spec
    conn = await asyncpg.connect(fresh_database)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{spec.schema}" CASCADE')
        for role in (spec.service_role, spec.owner_role):
            await conn.execute(f'DROP OWNED BY "{role}"')
            await conn.execute(f'DROP ROLE "{role}"')
    finally:
        await conn.close()


async def logs_in(owner: str, spec: SchemaSpec, password: str) -> bool:
    """Whether the role's stored SCRAM verifier is `password`'s (RFC 5802/7677): read from
    pg_authid rather than by logging in, since a test server may trust local connections."""
    conn = await asyncpg.connect(owner)
    try:
        verifier = await conn.fetchval(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1", spec.service_role
        )
    finally:
        await conn.close()
    mechanism, iterations_salt, keys = verifier.split("$")
    assert mechanism == "SCRAM-SHA-256"
    iterations, salt = iterations_salt.split(":")
    stored_key = keys.split(":")[0]
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return hashlib.sha256(client_key).digest() == base64.b64decode(stored_key)


async def test_migrate_never_changes_a_password_it_was_not_asked_to(
    fresh_database: str, spec: SchemaSpec
) -> None:
    await migrate(fresh_database, spec, "the-first-secret")
    assert await logs_in(fresh_database, spec, "the-first-secret")

    # The operator rotates the password by hand; migrate runs again with the old secret.
    conn = await asyncpg.connect(fresh_database)
    await conn.execute(f"ALTER ROLE \"{spec.service_role}\" PASSWORD 'rotated-by-the-operator'")
    await conn.close()
    assert await migrate(fresh_database, spec, "the-first-secret") == []
    assert await logs_in(fresh_database, spec, "rotated-by-the-operator")
    assert not await logs_in(fresh_database, spec, "the-first-secret")

    # Asked, it sets the secret it is given.
    await migrate(fresh_database, spec, "the-new-secret", set_password=True)
    assert await logs_in(fresh_database, spec, "the-new-secret")
    assert not await logs_in(fresh_database, spec, "rotated-by-the-operator")


def test_each_role_password_comes_from_its_own_secret(tmp_path: Path) -> None:
    secret_file = tmp_path / "booking.password"
    secret_file.write_text("from-a-mounted-secret\n")
    env = {
        "VISIO_ENVIRONMENT": "production",
        "VISIO_BOOKING_DATABASE_PASSWORD_FILE": str(secret_file),
        "VISIO_CONSENT_DATABASE_PASSWORD": "from-the-environment",
    }
    assert service_password("booking", env) == "from-a-mounted-secret"
    assert service_password("consent", env) == "from-the-environment"
    with pytest.raises(MissingPassword, match="VISIO_MEETINGS_DATABASE_PASSWORD"):
        service_password("meetings", env)
    assert service_password("meetings", {}) == "visio_meetings"  # development only


def test_migrate_in_production_refuses_a_role_without_its_secret(fresh_database: str) -> None:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("VISIO_") and name != "DATABASE_URL"
    }
    env |= {
        "VISIO_ENVIRONMENT": "production",
        "VISIO_BOOKING_DATABASE_PASSWORD": "booking-secret",
    }
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "visio-rdv"),
            "migrate",
            "--database-url",
            fresh_database,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "VISIO_MEETINGS_DATABASE_PASSWORD" in done.stderr
