"""`visio-rdv booking api-key …`, as a person runs it: a key printed once and working, listed
without its secret, revoked at once."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from visio_booking import commands
from visio_booking.keys import API_KEYS
from visio_booking.store import SCHEMA
from visio_runtime.db import migrate
from visio_testing.commands import run_commands


async def visio_rdv(*argv: str) -> int:
    """Run the command in a thread of its own (it runs its own event loop), return its code."""
    with pytest.raises(SystemExit) as exited:
        await asyncio.to_thread(run_commands, commands, argv)
    code: int = exited.value.code or 0  # type: ignore[assignment]
    return code


async def test_a_key_is_created_listed_and_revoked(
    fresh_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await migrate(fresh_database, SCHEMA, "visio_booking")
    url = ["--database-url", fresh_database]

    assert await visio_rdv(
        "booking", "api-key", "create", "--name", "caf-portal",
        "--scope", "appointments:write", "--scope", "appointments:read", *url,
    ) == 0  # fmt: skip
    created = capsys.readouterr()
    key = created.out.strip()
    assert key.startswith("vrdv_") and "shown once" in created.err

    conn = await asyncpg.connect(fresh_database)
    try:
        assert await API_KEYS.is_valid(conn, key)
        stored = await conn.fetchval("SELECT key_hash FROM booking.api_keys")
        assert key not in stored, "only the hash is kept"

        assert await visio_rdv("booking", "api-key", "list", *url) == 0
        listing = capsys.readouterr().out
        assert "caf-portal" in listing and "appointments:read appointments:write" in listing
        assert "active" in listing and key not in listing

        assert await visio_rdv("booking", "api-key", "revoke", "--name", "caf-portal", *url) == 0
        assert "revoked 1 keys of 'caf-portal'" in capsys.readouterr().out
        assert not await API_KEYS.is_valid(conn, key)
        assert await visio_rdv("booking", "api-key", "revoke", "--name", "caf-portal", *url) == 1
        assert "revoked" in (
            await visio_rdv("booking", "api-key", "list", *url) == 0 and capsys.readouterr().out
        )
    finally:
        await conn.close()


async def test_a_wrong_scope_or_no_database_is_refused(
    fresh_database: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    create = ["booking", "api-key", "create", "--name", "x", "--database-url", fresh_database]
    assert await visio_rdv(*create, "--scope", "appointments:everything") == 2
    assert "invalid choice" in capsys.readouterr().err
    assert await visio_rdv(*create, "--scope", "appointments:read") == 2  # not migrated
    assert "run visio-rdv migrate" in capsys.readouterr().err
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("VISIO_DATABASE_URL", raising=False)
    assert await visio_rdv("booking", "api-key", "list") == 2
    assert "--database-url" in capsys.readouterr().err
