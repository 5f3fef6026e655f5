"""The consent ledger: append-only, hash-chained records in PostgreSQL.

Each record is a JSON object. `append` adds two fields to it, `seq` (its position, from 1) and
`recorded_at` (ISO 8601 UTC, stamped under the chain lock so time follows seq), and stores it as
`payload`; the hash of record n covers the hash of record n-1, so changing any stored record,
or removing or reordering one, breaks every link after it. See `record_hash` for the exact bytes,
`visio_consent.verify` for the walk that checks them, and `visio_consent.signing` for the
checkpoints that catch a rewrite whose hashes were all recomputed.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import rfc8785
from visio_runtime.db import SchemaSpec
from visio_shared import LedgerEntry

SCHEMA = SchemaSpec(schema="consent", sql_dir=Path(__file__).parent / "migrations")

GENESIS_HASH = "0" * 64

# Keys that `append` owns: callers never set them.
_STAMPED = ("seq", "recorded_at")
# Keys every record carries, repeated in columns of the same name for queries.
_INDEXED = ("kind", "appointment_id", "source_event_id")


def record_hash(prev_hash: str, record: Mapping[str, Any]) -> str:
    """The hash of one record, as 64 lowercase hex digits.

    Byte layout, for an auditor recomputing it with any SHA-256 tool:

        hash = lowercase_hex( SHA-256( P || C ) )

    - P: the previous record's `hash` as its 64 lowercase hexadecimal characters, encoded in
      ASCII (64 bytes; not the 32 raw digest bytes). For the first record (seq 1), P is 64
      ASCII zeros ("000…0").
    - C: the record (the ledger's `payload` column, `seq` and `recorded_at` included)
      serialised as RFC 8785 JSON Canonicalization Scheme, UTF-8: object keys sorted by their
      UTF-16 code units, no whitespace, ES6 number formatting, minimal string escaping.
    - No separator, length prefix or trailing newline between or after P and C.

    In a shell: `printf '%s' "$PREV_HASH" > m; jcs payload.json >> m; sha256sum m`.
    """
    return _digest(prev_hash, rfc8785.dumps(dict(record)))


def _digest(prev_hash: str, canonical: bytes) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + canonical).hexdigest()


def subject_ref(key: str | bytes, email: str) -> str:
    """The pseudonym of a person: HMAC-SHA256(key, casefold(strip(email)) as UTF-8), hex."""
    key_bytes = key.encode() if isinstance(key, str) else key
    normalised = email.strip().casefold().encode("utf-8")
    return hmac.new(key_bytes, normalised, hashlib.sha256).hexdigest()


def iso_utc(moment: datetime) -> str:
    """The one timestamp format of the ledger: `2025-03-01T09:30:00.000000+00:00`."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


# One statement per batch: the statement-level trigger (migration 002) checks the whole batch
# against the chain head in one pass, which is what keeps batched appends fast.
_INSERT = """
INSERT INTO ledger
    (seq, prev_hash, hash, recorded_at, kind, appointment_id, source_event_id, payload)
SELECT seq, prev_hash, hash, $4, kind, appointment_id, source_event_id, payload::jsonb
FROM unnest($1::bigint[], $2::text[], $3::text[], $5::text[], $6::uuid[], $7::uuid[], $8::text[])
    AS r(seq, prev_hash, hash, kind, appointment_id, source_event_id, payload)
ORDER BY seq
"""


async def append(
    conn: asyncpg.Connection, records: Sequence[Mapping[str, Any]], *, batch_size: int = 100
) -> list[LedgerEntry]:
    """Append records to the chain, in order, in one transaction (a savepoint if the caller
    already holds one, so the caller's other writes commit or roll back with them).

    Each record must carry `kind`, `appointment_id` and `source_event_id` (strings) and may
    hold only JSON strings, integers, booleans, nulls, lists and objects. Appends are
    serialised by the chain head row, locked FOR UPDATE until commit; the database refuses any
    row that does not extend the head, so concurrent writers queue and never fork the chain.
    """
    if not records:
        return []
    chained = [_prepared(record) for record in records]
    async with conn.transaction():
        head = await conn.fetchrow("SELECT head_seq, head_hash FROM lock_chain_head()")
        assert head is not None, "chain_head is seeded by the migration"
        seq: int = head["head_seq"]
        prev: str = head["head_hash"]
        recorded_at = datetime.now(UTC)
        rows: list[tuple[int, str, str, str, uuid.UUID, uuid.UUID, str]] = []
        for record in chained:
            seq += 1
            record["seq"] = seq
            record["recorded_at"] = iso_utc(recorded_at)
            canonical = rfc8785.dumps(record)
            digest = _digest(prev, canonical)
            rows.append(
                (
                    seq,
                    prev,
                    digest,
                    record["kind"],
                    uuid.UUID(record["appointment_id"]),
                    uuid.UUID(record["source_event_id"]),
                    canonical.decode("utf-8"),
                )
            )
            prev = digest
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            await conn.execute(
                _INSERT,
                [row[0] for row in chunk],
                [row[1] for row in chunk],
                [row[2] for row in chunk],
                recorded_at,
                [row[3] for row in chunk],
                [row[4] for row in chunk],
                [row[5] for row in chunk],
                [row[6] for row in chunk],
            )
    return [LedgerEntry(seq=row[0], kind=row[3], hash=row[2]) for row in rows]


def _prepared(record: Mapping[str, Any]) -> dict[str, Any]:
    for key in _STAMPED:
        if key in record:
            raise ValueError(f"ledger records never set {key!r}: append stamps it")
    for key in _INDEXED:
        if not isinstance(record.get(key), str):
            raise ValueError(f"a ledger record needs {key!r} as a string")
    for key in ("appointment_id", "source_event_id"):
        uuid.UUID(record[key])  # ValueError if it is not one
    _check_json(record, "record")
    return dict(record)


def _check_json(value: Any, where: str) -> None:
    # Floats are refused: jsonb stores numbers as numeric, and a float may come back in another
    # form (1e21 as an integer), which would re-canonicalise differently and fail verification.
    if isinstance(value, float):
        raise ValueError(f"{where}: floats are not stored in the ledger; use a string")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: object keys must be strings")
            _check_json(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_json(item, f"{where}[{index}]")
    elif not isinstance(value, str | int | bool) and value is not None:
        raise ValueError(f"{where}: {type(value).__name__} is not a JSON value")
