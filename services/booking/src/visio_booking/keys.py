"""API keys: each calling system has its own, stored as a SHA-256 hash, with scopes."""

from __future__ import annotations

import hashlib
import secrets

import asyncpg

SCOPES = (
    "appointments:write",
    "appointments:read",
    "appointments:admin",
    "consent:read",
    "consent:withdraw",
)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def create_api_key(conn: asyncpg.Connection, name: str, scopes: list[str]) -> str:
    """Create a key (owner connection: the service itself only reads keys); return it once."""
    unknown = set(scopes) - set(SCOPES)
    if unknown:
        raise ValueError(f"unknown scopes: {sorted(unknown)}")
    key = "vrdv_" + secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO booking.api_keys (key_hash, name, scopes) VALUES ($1, $2, $3)",
        hash_key(key),
        name,
        scopes,
    )
    return key


async def key_is_valid(conn: asyncpg.Connection, key: str) -> bool:
    found = await conn.fetchval(
        "SELECT true FROM booking.api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        hash_key(key),
    )
    return bool(found)


async def scopes_of(pool: asyncpg.Pool, key: str) -> list[str] | None:
    row = await pool.fetchrow(
        "SELECT scopes FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL", hash_key(key)
    )
    return list(row["scopes"]) if row else None
