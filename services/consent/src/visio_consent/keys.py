"""API keys of consent's callers: each its own key, stored as SHA-256, with scopes."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import asyncpg

SCOPES = ("consent:read", "consent:withdraw", "personal-data:export")


@dataclass(frozen=True)
class Caller:
    name: str
    scopes: tuple[str, ...]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def create_api_key(conn: asyncpg.Connection, name: str, scopes: list[str]) -> str:
    """Create a key (owner connection: the service itself only reads keys); return it once."""
    unknown = set(scopes) - set(SCOPES)
    if unknown or not scopes:
        raise ValueError(f"scopes must be among {list(SCOPES)}; got {sorted(scopes)}")
    key = "vrdv_consent_" + secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO consent.api_keys (key_hash, name, scopes) VALUES ($1, $2, $3)",
        hash_key(key),
        name,
        sorted(set(scopes)),
    )
    return key


async def caller_of(pool: asyncpg.Pool, key: str) -> Caller | None:
    """Who holds this key, or None if it is unknown or revoked."""
    row = await pool.fetchrow(
        "SELECT name, scopes FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        hash_key(key),
    )
    return Caller(row["name"], tuple(row["scopes"])) if row else None
