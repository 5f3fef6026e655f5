"""API keys: each calling system has its own, stored as a SHA-256 hash, with scopes.

A key's name is the caller's identity: the appointments a key books belong to that name, so a
system can rotate its key (create a new one with the same name, then revoke the old one by id)
without losing sight of its appointments. Keys are created, listed and revoked with an owner
connection (`visio-rdv booking api-key …`); the service itself only reads them.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

import asyncpg

# Booking's own scopes; consent keeps its own keys (consent:read, consent:withdraw).
SCOPES = (
    "appointments:write",
    "appointments:read",
    "appointments:admin",
    "personal-data:erase",  # erase a person's data in every service (not implied by admin)
)
ADMIN = "appointments:admin"


@dataclass(frozen=True)
class KeyHolder:
    """Who presented a valid key."""

    key_id: int
    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        # The admin scope reads and changes everyone's appointments: it implies the others.
        return scope in self.scopes or (scope.startswith("appointments:") and ADMIN in self.scopes)


@dataclass(frozen=True)
class ApiKey:
    key_id: int
    name: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def create_api_key(conn: asyncpg.Connection, name: str, scopes: list[str]) -> str:
    """Create a key (owner connection: the service itself only reads keys); return it once."""
    unknown = set(scopes) - set(SCOPES)
    if unknown:
        raise ValueError(f"unknown scopes: {sorted(unknown)}; known: {', '.join(SCOPES)}")
    if not scopes:
        raise ValueError("a key needs at least one scope")
    if not name.strip():
        raise ValueError("a key needs a name: the calling system's")
    key = "vrdv_" + secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO booking.api_keys (key_hash, name, scopes) VALUES ($1, $2, $3)",
        hash_key(key),
        name.strip(),
        sorted(set(scopes)),
    )
    return key


async def key_is_valid(conn: asyncpg.Connection, key: str) -> bool:
    found = await conn.fetchval(
        "SELECT true FROM booking.api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        hash_key(key),
    )
    return bool(found)


async def holder_of(pool: asyncpg.Pool, key: str) -> KeyHolder | None:
    """The holder of a valid, unrevoked key; None for an unknown or revoked one."""
    row = await pool.fetchrow(
        "SELECT id, name, scopes FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        hash_key(key),
    )
    if row is None:
        return None
    return KeyHolder(key_id=row["id"], name=row["name"], scopes=frozenset(row["scopes"]))


async def list_api_keys(conn: asyncpg.Connection) -> list[ApiKey]:
    rows = await conn.fetch(
        "SELECT id, name, scopes, created_at, revoked_at FROM booking.api_keys ORDER BY id"
    )
    return [
        ApiKey(
            key_id=row["id"],
            name=row["name"],
            scopes=list(row["scopes"]),
            created_at=row["created_at"],
            revoked_at=row["revoked_at"],
        )
        for row in rows
    ]


async def revoke_api_keys(conn: asyncpg.Connection, name: str, key_id: int | None = None) -> int:
    """Revoke the caller's active keys (or only the one with `key_id`); returns how many.
    Effective on the next request: every request looks its key up."""
    status: str = await conn.execute(
        "UPDATE booking.api_keys SET revoked_at = now() "
        "WHERE name = $1 AND revoked_at IS NULL AND ($2::bigint IS NULL OR id = $2)",
        name,
        key_id,
    )
    return int(status.rsplit(" ", 1)[-1])
