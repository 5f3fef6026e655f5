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
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from visio_runtime.db import SchemaSpec
from visio_shared import LedgerEntry

from visio_consent import canonical

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
    return _digest(prev_hash, canonical.dumps(dict(record)))


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
SELECT seq, prev_hash, hash, recorded_at, kind, appointment_id, source_event_id, payload::jsonb
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::uuid[],
            $7::uuid[], $8::text[])
    AS r(seq, prev_hash, hash, recorded_at, kind, appointment_id, source_event_id, payload)
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
        rows: list[_Row] = []
        for record in chained:
            seq += 1
            record["seq"] = seq
            record["recorded_at"] = iso_utc(recorded_at)
            exact = canonical.dumps(record)
            digest = _digest(prev, exact)
            rows.append(_Row(seq, prev, digest, recorded_at, record, exact.decode("utf-8")))
            prev = digest
        await _insert(conn, rows, batch_size)
    return [row.entry() for row in rows]


@dataclass(frozen=True)
class _Row:
    """One ledger row about to be inserted: its chain fields, its record and the record's
    canonical JSON (the bytes its hash covers)."""

    seq: int
    prev_hash: str
    hash: str
    recorded_at: datetime
    record: Mapping[str, Any]
    canonical: str

    def entry(self) -> LedgerEntry:
        return LedgerEntry(
            seq=self.seq,
            kind=self.record["kind"],
            hash=self.hash,
            payload=self.canonical,
            recorded_at=self.recorded_at,
        )


async def _insert(conn: asyncpg.Connection, rows: Sequence[_Row], batch_size: int) -> None:
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        await conn.execute(
            _INSERT,
            [row.seq for row in chunk],
            [row.prev_hash for row in chunk],
            [row.hash for row in chunk],
            [row.recorded_at for row in chunk],
            [row.record["kind"] for row in chunk],
            [uuid.UUID(row.record["appointment_id"]) for row in chunk],
            [uuid.UUID(row.record["source_event_id"]) for row in chunk],
            [row.canonical for row in chunk],
        )


def canonical_payload(stored: str) -> str:
    """The bytes a stored record's hash covers (its RFC 8785 JSON) from the `payload` column,
    which jsonb hands back in its own layout."""
    return canonical.dumps(json.loads(stored)).decode("utf-8")


class DoesNotChain(ValueError):
    """Records offered to `restore` that are not the ledger's next ones, exactly as chained."""


async def restore(conn: asyncpg.Connection, entries: Sequence[LedgerEntry]) -> list[LedgerEntry]:
    """Put back records the ledger held once and lost (a database restored from a backup
    older than they are), from their announcements: each entry's `payload` must be the
    canonical JSON of the record chained at its `seq`, and the entries must extend the current
    head, each hashing to its stated `hash` after the one before.

    Unlike `append`, nothing is stamped: seq, recorded_at and prev_hash are the original ones,
    so the rebuilt rows are byte for byte those that were hashed, signed and announced. Raises
    DoesNotChain, writing nothing, for any entry that is not.
    """
    if not entries:
        return []
    async with conn.transaction():
        head = await conn.fetchrow("SELECT head_seq, head_hash FROM lock_chain_head()")
        assert head is not None, "chain_head is seeded by the migration"
        rows = _chained(entries, head["head_seq"], head["head_hash"])
        await _insert(conn, rows, batch_size=100)
    return [row.entry() for row in rows]


def check_chain(entries: Sequence[LedgerEntry], head_seq: int, head_hash: str) -> None:
    """Raise DoesNotChain unless `entries` extend the head (`head_seq`, `head_hash`) exactly as
    `restore` requires; checks only, writes nothing."""
    _chained(entries, head_seq, head_hash)


def _chained(entries: Sequence[LedgerEntry], seq: int, prev: str) -> list[_Row]:
    rows: list[_Row] = []
    for entry in entries:
        rows.append(_restored_row(entry, seq + 1, prev))
        seq, prev = entry.seq, entry.hash
    return rows


def _restored_row(entry: LedgerEntry, seq: int, prev: str) -> _Row:
    if entry.seq != seq:
        raise DoesNotChain(f"seq {entry.seq} does not follow seq {seq - 1}: seq {seq} is wanted")
    if entry.payload is None:
        raise DoesNotChain(
            f"seq {seq} was announced without its record (an event older than the payload "
            "field): it cannot be rebuilt from the topic"
        )
    digest = _digest(prev, entry.payload.encode("utf-8"))
    if digest != entry.hash:
        raise DoesNotChain(
            f"seq {seq}: the record carried hashes to {digest} after seq {seq - 1}, not to the "
            f"announced {entry.hash}: it was altered, or is not the record chained there"
        )
    try:
        record = json.loads(entry.payload)
        if canonical.dumps(record).decode("utf-8") != entry.payload:
            raise ValueError("not in RFC 8785 canonical form")
        if (record.get("seq"), record.get("kind")) != (seq, entry.kind):
            raise ValueError(f"it says seq {record.get('seq')}, kind {record.get('kind')!r}")
        recorded_at = datetime.fromisoformat(record["recorded_at"])
        _prepared({key: value for key, value in record.items() if key not in _STAMPED})
    except (ValueError, KeyError, TypeError) as exc:
        raise DoesNotChain(f"seq {seq}: the record carried is not a ledger record: {exc}") from exc
    return _Row(seq, prev, digest, recorded_at, record, entry.payload)


def stored_entry(row: Mapping[str, Any]) -> LedgerEntry:
    """A ledger row (`seq`, `kind`, `hash`, `recorded_at`, `payload`) as its announcement
    carries it: the record included, so the announcement can rebuild it (`restore`)."""
    return LedgerEntry(
        seq=row["seq"],
        kind=row["kind"],
        hash=row["hash"],
        payload=canonical_payload(row["payload"]),
        recorded_at=row["recorded_at"],
    )


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
