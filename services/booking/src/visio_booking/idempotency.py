"""Idempotent requests: other Caf systems retry, and one request must never take effect twice.

A key (HTTP `Idempotency-Key`, Kafka `request_id`) is scoped to its caller. The first request
that takes effect stores its answer in the same transaction as the effect; a repeat with the
same request gets that answer again, the same key with another request is refused (422). A
request that was refused is not remembered (like Stripe's): fixed, it may be sent again with
the same key. Two twins at once: the second waits on the first's row lock, then replays.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from visio_runtime.problems import Problem


@dataclass(frozen=True)
class Outcome:
    """What a request that took effect answers: an HTTP status and body (the Kafka reply says
    the same), and whether it is the replay of an earlier answer."""

    status_code: int
    body: dict[str, Any]
    replayed: bool = field(default=False, compare=False)

    def json(self) -> str:
        return json.dumps(self.body, separators=(",", ":"))


def fingerprint(request_type: str, appointment_id: uuid.UUID | None, payload: Any) -> str:
    """The same request whatever its JSON spacing or key order, and whichever channel."""
    canonical = json.dumps(
        {"type": request_type, "appointment_id": str(appointment_id or ""), "payload": payload},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


async def lookup(
    conn: asyncpg.Connection, caller: str, key: str, print_: str, key_field: str
) -> Outcome | None:
    """The stored answer to this request, if it took effect before."""
    row = await conn.fetchrow(
        "SELECT fingerprint, status_code, response FROM idempotency_keys "
        "WHERE caller = $1 AND key = $2",
        caller,
        key,
    )
    return None if row is None else _replay(row, print_, key_field)


async def claim(
    conn: asyncpg.Connection, caller: str, key: str, print_: str, request_type: str, key_field: str
) -> Outcome | None:
    """Take the key for this transaction; if a twin committed it meanwhile, its answer."""
    claimed = await conn.fetchval(
        "INSERT INTO idempotency_keys (caller, key, fingerprint, request_type) "
        "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true",
        caller,
        key,
        print_,
        request_type,
    )
    if claimed:
        return None
    replay = await lookup(conn, caller, key, print_, key_field)
    assert replay is not None, "a committed key always has its answer"
    return replay


async def remember(conn: asyncpg.Connection, caller: str, key: str, outcome: Outcome) -> None:
    await conn.execute(
        "UPDATE idempotency_keys SET status_code = $3, response = $4 "
        "WHERE caller = $1 AND key = $2",
        caller,
        key,
        outcome.status_code,
        outcome.json(),
    )


def _replay(row: asyncpg.Record, print_: str, key_field: str) -> Outcome:
    if row["fingerprint"] != print_:
        raise Problem(
            422,
            "idempotency-key-reused",
            "Idempotency key reused",
            f"this {key_field} was first used for another request; "
            "send a new request with a new key",
            errors=[{"field": key_field, "message": "already used for a different request"}],
        )
    return Outcome(row["status_code"], json.loads(row["response"]), replayed=True)
