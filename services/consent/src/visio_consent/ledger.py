"""The consent ledger: append-only, hash-chained records in PostgreSQL, and their verifier.

Each record is a JSON object. `append` adds two fields to it, `seq` (its position, from 1) and
`recorded_at` (ISO 8601 UTC, stamped under the chain lock so time follows seq), and stores it as
`payload`; the hash of record n covers the hash of record n-1, so changing any stored record,
or removing or reordering one, breaks every link after it. See `record_hash` for the exact bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import rfc8785
from pydantic import BaseModel, ConfigDict
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


# One statement per batch; ORDER BY seq makes the per-row trigger see the rows in chain order.
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


class VerifyReport(BaseModel):
    """The outcome of walking the chain from genesis.

    `count`, `head_seq` and `head_hash` describe the records that verified (all of them when
    `ok`); when broken, `broken_seq` is the first record that fails, with what the verifier
    expected and what is stored.
    """

    model_config = ConfigDict(frozen=True)

    ok: bool
    count: int
    head_seq: int
    head_hash: str
    broken_seq: int | None = None
    reason: str | None = None
    expected: str | None = None
    stored: str | None = None

    def describe(self) -> str:
        if self.ok:
            return (
                f"ledger ok: {self.count} records, head seq {self.head_seq} hash {self.head_hash}"
            )
        return (
            f"ledger BROKEN at seq {self.broken_seq}: {self.reason}\n"
            f"  expected: {self.expected}\n"
            f"  stored:   {self.stored}\n"
            f"  {self.count} records verified before it (last good seq {self.head_seq}, "
            f"hash {self.head_hash})"
        )


_WALK = """
SELECT seq, prev_hash, hash, kind, appointment_id, source_event_id, payload
FROM ledger ORDER BY seq
"""


async def verify(conn: asyncpg.Connection, *, prefetch: int = 1000) -> VerifyReport:
    """Walk the chain from genesis, recompute every hash, report the first broken link.

    Also checks that seq runs 1, 2, 3… without gaps, that the queryable columns agree with the
    chained record, and that `chain_head` names the last record (a truncated tail whose head
    was left in place shows there; one whose head was rewritten too needs the signed
    checkpoints). Reads one snapshot, so appends running meanwhile do not disturb it.
    """
    if conn.is_in_transaction():
        return await _walk(conn, prefetch)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        return await _walk(conn, prefetch)


async def _walk(conn: asyncpg.Connection, prefetch: int) -> VerifyReport:
    head = await conn.fetchrow("SELECT seq, hash FROM chain_head")
    assert head is not None, "chain_head is seeded by the migration"
    count, last_seq, last_hash = 0, 0, GENESIS_HASH

    def broken(seq: int, reason: str, expected: str, stored: str) -> VerifyReport:
        return VerifyReport(
            ok=False,
            count=count,
            head_seq=last_seq,
            head_hash=last_hash,
            broken_seq=seq,
            reason=reason,
            expected=expected,
            stored=stored,
        )

    async for row in conn.cursor(_WALK, prefetch=prefetch):
        seq: int = row["seq"]
        if seq != last_seq + 1:
            return broken(seq, "seq is not contiguous", str(last_seq + 1), str(seq))
        if row["prev_hash"] != last_hash:
            return broken(seq, "prev_hash is not the previous hash", last_hash, row["prev_hash"])
        payload = json.loads(row["payload"])
        if not isinstance(payload, dict):
            return broken(seq, "payload is not a JSON object", "object", type(payload).__name__)
        try:
            computed = record_hash(row["prev_hash"], payload)
        except rfc8785.CanonicalizationError as exc:
            return broken(seq, "payload cannot be canonicalised", "RFC 8785 JSON", str(exc))
        if computed != row["hash"]:
            return broken(seq, "hash does not match the record", computed, row["hash"])
        columns = {
            "seq": seq,
            "kind": row["kind"],
            "appointment_id": str(row["appointment_id"]),
            "source_event_id": str(row["source_event_id"]),
        }
        chained = {key: payload.get(key) for key in columns}
        if chained != columns:
            return broken(
                seq, "columns disagree with the chained record", _show(chained), _show(columns)
            )
        count, last_seq, last_hash = count + 1, seq, row["hash"]

    if (head["seq"], head["hash"]) != (last_seq, last_hash):
        return broken(
            head["seq"],
            "chain_head does not name the last record",
            f"{last_seq} {last_hash}",
            f"{head['seq']} {head['hash']}",
        )
    return VerifyReport(ok=True, count=count, head_seq=last_seq, head_hash=last_hash)


def _show(values: Mapping[str, Any]) -> str:
    return json.dumps(values, sort_keys=True)
