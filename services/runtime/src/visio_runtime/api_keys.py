"""API keys of the systems that call a service's HTTP API: written once for booking and consent.

Each calling system has its own key, stored only as its SHA-256 (a leaked table gives no key),
with scopes. A key's name is the caller's identity (booking: the appointments a key books belong
to that name), so a system rotates its key by creating a new one under the same name, then
revoking the old one by id. Keys are created, listed and revoked with an owner connection
(`visio-rdv <service> api-key …`, `visio_runtime.api_key_commands`); a service itself may only
read them, and looks its key up on every request, so a revocation takes effect at once. An
endpoint whose write checks the key itself, in the write's own statement, may take the holder
from memory instead (`KeptHolders`): the revocation is then seen by that statement.

Each service's table is `<schema>.api_keys (id, key_hash, name, scopes, created_at,
revoked_at)`; the service describes its own scopes with an `ApiKeys`.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from visio_runtime.problems import Problem

CHALLENGE = {"WWW-Authenticate": "Bearer"}
bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <api key>")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class KeyHolder:
    """Who presented a valid key."""

    key_id: int
    name: str
    scopes: frozenset[str]
    implied: Mapping[str, frozenset[str]] = field(default_factory=dict, compare=False)
    # False: taken from memory (`KeptHolders`), the key not looked up for this request; the
    # write must check that it is still unrevoked.
    checked: bool = field(default=True, compare=False)

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or any(
            scope in self.implied.get(held, frozenset()) for held in self.scopes
        )


@dataclass(frozen=True)
class ApiKey:
    """A key as the listing shows it: never its secret."""

    key_id: int
    name: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class ApiKeys:
    """One service's keys: where they are kept, which scopes exist and what each implies."""

    service: str  # booking, consent: the command's word and the error messages'
    schema: str
    scopes: tuple[str, ...]
    prefix: str  # the keys' visible prefix (`vrdv_`), so a leaked one is recognised in a scan
    # A scope that grants others (booking's admin reads and changes every appointment).
    implies: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # Name prefixes no key may take, with why (booking's Kafka partners own `kafka:<system>`).
    reserved: Mapping[str, str] = field(default_factory=dict)

    @property
    def table(self) -> str:
        return f"{self.schema}.api_keys"

    async def create(self, conn: asyncpg.Connection, name: str, scopes: list[str]) -> str:
        """Create a key (owner connection); return it: it is shown once, only its hash kept."""
        unknown = set(scopes) - set(self.scopes)
        if unknown:
            raise ValueError(f"unknown scopes: {sorted(unknown)}; known: {', '.join(self.scopes)}")
        if not scopes:
            raise ValueError("a key needs at least one scope")
        if not name.strip():
            raise ValueError("a key needs a name: the calling system's")
        for reserved, why in self.reserved.items():
            if name.strip().startswith(reserved):
                raise ValueError(f"a key's name cannot start with {reserved!r}: {why}")
        key = self.prefix + secrets.token_urlsafe(32)
        await conn.execute(
            f"INSERT INTO {self.table} (key_hash, name, scopes) VALUES ($1, $2, $3)",
            hash_key(key),
            name.strip(),
            sorted(set(scopes)),
        )
        return key

    async def is_valid(self, conn: asyncpg.Connection, key: str) -> bool:
        found = await conn.fetchval(
            f"SELECT true FROM {self.table} WHERE key_hash = $1 AND revoked_at IS NULL",
            hash_key(key),
        )
        return bool(found)

    async def holder_of(self, db: asyncpg.Pool | asyncpg.Connection, key: str) -> KeyHolder | None:
        """The holder of a valid, unrevoked key; None for an unknown or revoked one."""
        return await self._holder(db, hash_key(key))

    async def unrevoked(self, db: asyncpg.Pool | asyncpg.Connection, key_id: int) -> bool:
        """Whether the key with this id is still valid (a kept holder's, checked late)."""
        return bool(
            await db.fetchval(
                f"SELECT true FROM {self.table} WHERE id = $1 AND revoked_at IS NULL", key_id
            )
        )

    async def _holder(
        self, db: asyncpg.Pool | asyncpg.Connection, key_hash: str
    ) -> KeyHolder | None:
        row = await db.fetchrow(
            f"SELECT id, name, scopes FROM {self.table} WHERE key_hash = $1 AND revoked_at IS NULL",
            key_hash,
        )
        if row is None:
            return None
        return KeyHolder(row["id"], row["name"], frozenset(row["scopes"]), self.implies)

    async def list(self, conn: asyncpg.Connection) -> list[ApiKey]:
        rows = await conn.fetch(
            f"SELECT id, name, scopes, created_at, revoked_at FROM {self.table} ORDER BY id"
        )
        return [
            ApiKey(
                row["id"], row["name"], list(row["scopes"]), row["created_at"], row["revoked_at"]
            )
            for row in rows
        ]

    async def revoke(self, conn: asyncpg.Connection, name: str, key_id: int | None = None) -> int:
        """Revoke the caller's active keys (or only the one with `key_id`); returns how many."""
        status: str = await conn.execute(
            f"UPDATE {self.table} SET revoked_at = now() "
            "WHERE name = $1 AND revoked_at IS NULL AND ($2::bigint IS NULL OR id = $2)",
            name,
            key_id,
        )
        return int(status.rsplit(" ", 1)[-1])

    def authenticator(self, scope: str, kept: bool = False) -> Any:
        """A FastAPI dependency: the holder of the request's key if it grants `scope`; 401
        without a valid key, 403 without the scope (as problem+json).

        `kept`: a holder seen before comes from the app's `KeptHolders`
        (`app.state.api_key_holders`), unchecked — for an endpoint whose write checks the key
        in its own statement, and looks it up before any other answer (`unrevoked`)."""

        async def check(
            request: Request,
            credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
        ) -> KeyHolder:
            if credentials is None or credentials.scheme.lower() != "bearer":
                raise Problem(
                    401,
                    "unauthorized",
                    "Unauthorized",
                    "send Authorization: Bearer <key>",
                    CHALLENGE,
                )
            key_hash = hash_key(credentials.credentials)
            holders: KeptHolders | None = request.app.state.api_key_holders if kept else None
            holder = holders.get(key_hash) if holders else None
            if holder is None or not holder.allows(scope):
                # Looked up: a refusal is only ever given for a key as it stands now.
                holder = await self._holder(request.app.state.runtime.db, key_hash)
                if holder is None:
                    raise unknown_key()
                if holders is not None and holder.allows(scope):
                    holders.keep(key_hash, holder)
            if not holder.allows(scope):
                raise Problem(403, "forbidden", "Forbidden", f"this key lacks the scope {scope!r}")
            return holder

        return check


def unknown_key() -> Problem:
    return Problem(401, "unauthorized", "Unauthorized", "unknown or revoked API key", CHALLENGE)


class KeptHolders:
    """The holders of the keys a service was shown, by the keys' hashes: what a key's row says
    that never changes — its id, name and scopes (keys are created and revoked, nothing else).
    Whether it is revoked is not kept: an endpoint that takes its holder from here checks that
    in the statement that writes (booking's booking), so a revocation committed before the
    request still refuses it, with no look-up first. At most `most` keys are kept; past that,
    they are all forgotten and looked up again."""

    def __init__(self, most: int = 10_000) -> None:
        self.most = most
        self._holders: dict[str, KeyHolder] = {}

    def get(self, key_hash: str) -> KeyHolder | None:
        return self._holders.get(key_hash)

    def keep(self, key_hash: str, holder: KeyHolder) -> None:
        if len(self._holders) >= self.most:
            self._holders.clear()
        self._holders[key_hash] = replace(holder, checked=False)
