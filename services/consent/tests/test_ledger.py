"""The ledger on a real PostgreSQL: chaining, append-only enforcement, tamper detection,
concurrency."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
import rfc8785
from visio_consent.ledger import (
    GENESIS_HASH,
    SCHEMA,
    append,
    record_hash,
    subject_ref,
    verify,
)
from visio_runtime.db import migrate

if TYPE_CHECKING:
    from conftest import Database


def a_record(kind: str = "cgu_accepted", **extra: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "appointment_id": str(uuid.uuid4()),
        "source_event_id": str(uuid.uuid4()),
        "subject_ref": "ab" * 32,
        **extra,
    }


async def ledger_rows(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM ledger ORDER BY seq")


def test_record_hash_byte_layout() -> None:
    # The documented layout, spelled out by hand: ASCII hex of prev_hash, then the JCS bytes.
    record = {"seq": 1, "kind": "cgu_accepted", "note": "é"}
    jcs = '{"kind":"cgu_accepted","note":"é","seq":1}'.encode()
    assert rfc8785.dumps(record) == jcs
    assert record_hash(GENESIS_HASH, record) == hashlib.sha256(b"0" * 64 + jcs).hexdigest()
    assert (
        record_hash(GENESIS_HASH, record)
        == "3fe11a2e5c09422f436328768be3ca58a7d46298e9f03878b121a92320df6fc2"
    )


def test_subject_ref_is_keyed_hmac_of_normalised_email() -> None:
    ref = subject_ref("key-1", " Amelie.Poulain@Example.ORG\n")
    assert ref == subject_ref("key-1", "amelie.poulain@example.org")
    assert ref == subject_ref(b"key-1", "AMELIE.POULAIN@EXAMPLE.ORG")
    assert ref != subject_ref("key-2", "amelie.poulain@example.org")
    assert len(ref) == 64 and int(ref, 16) >= 0
    assert "amelie" not in ref


async def test_appends_chain_and_verify(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        first = await append(conn, [a_record(), a_record("recording_authorised")])
        second = await append(conn, [a_record("recording_refused")])
        rows = await ledger_rows(conn)
        head = await conn.fetchrow("SELECT seq, hash FROM chain_head")
        report = await verify(conn)

    assert [entry.seq for entry in first + second] == [1, 2, 3]
    assert [entry.kind for entry in first + second] == [
        "cgu_accepted",
        "recording_authorised",
        "recording_refused",
    ]
    prev = GENESIS_HASH
    for row, entry in zip(rows, first + second, strict=True):
        payload = json.loads(row["payload"])
        assert row["prev_hash"] == prev
        assert payload["seq"] == row["seq"]
        assert payload["recorded_at"].endswith("+00:00")
        assert row["hash"] == entry.hash
        assert row["hash"] == hashlib.sha256(prev.encode() + rfc8785.dumps(payload)).hexdigest()
        prev = row["hash"]
    assert (head["seq"], head["hash"]) == (3, prev)
    assert report.ok and report.count == 3
    assert (report.head_seq, report.head_hash) == (3, prev)
    assert report.broken_seq is None


async def test_verify_of_an_empty_ledger_is_ok(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        report = await verify(conn)
    assert report.ok and report.count == 0 and report.head_hash == GENESIS_HASH


async def test_append_refuses_records_it_could_not_verify_later(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        for bad in (
            a_record(seq=7),
            a_record(recorded_at="2025-01-01T00:00:00+00:00"),
            a_record(score=0.5),
            {"kind": "cgu_accepted"},
        ):
            with pytest.raises(ValueError):
                await append(conn, [bad])
        assert await conn.fetchval("SELECT count(*) FROM ledger") == 0


async def test_service_role_can_neither_rewrite_nor_fork(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await append(conn, [a_record(), a_record()])
        for statement in (
            "UPDATE ledger SET payload = '{}'::jsonb WHERE seq = 1",
            "DELETE FROM ledger WHERE seq = 2",
            "TRUNCATE ledger",
            "UPDATE chain_head SET seq = 0, hash = repeat('0', 64)",
            "SELECT * FROM chain_head FOR UPDATE",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
        # A row that does not extend the head (here: a second child of genesis) is refused.
        with pytest.raises(asyncpg.SerializationError, match="does not extend the chain head"):
            await conn.execute(
                "INSERT INTO ledger (seq, prev_hash, hash, recorded_at, kind, appointment_id, "
                "source_event_id, payload) VALUES (3, repeat('0', 64), repeat('a', 64), now(), "
                "'cgu_accepted', gen_random_uuid(), gen_random_uuid(), '{}')"
            )
        assert [row["seq"] for row in await ledger_rows(conn)] == [1, 2]
        assert (await verify(conn)).ok


async def test_owner_and_superuser_are_refused_by_the_trigger(
    pool: asyncpg.Pool, superuser: asyncpg.Connection
) -> None:
    async with pool.acquire() as conn:
        await append(conn, [a_record(), a_record()])
    for role in (None, SCHEMA.owner_role):
        async with superuser.transaction():
            if role:
                await superuser.execute(f'SET LOCAL ROLE "{role}"')
            for statement, operation in (
                ("UPDATE ledger SET kind = 'forged' WHERE seq = 1", "UPDATE"),
                ("DELETE FROM ledger WHERE seq = 2", "DELETE"),
                ("TRUNCATE ledger", "TRUNCATE"),
            ):
                with pytest.raises(asyncpg.RaiseError, match=f"append-only: {operation} refused"):
                    async with superuser.transaction():
                        await superuser.execute(statement)
    rows = await ledger_rows(superuser)
    assert [(row["seq"], row["kind"]) for row in rows] == [(1, "cgu_accepted"), (2, "cgu_accepted")]


async def _rewrite_seq2_and_rehash(conn: asyncpg.Connection) -> None:
    # A careful forger recomputes the hash of the record they changed: the next link breaks.
    row = await conn.fetchrow("SELECT prev_hash, payload FROM ledger WHERE seq = 2")
    payload = {**json.loads(row["payload"]), "kind": "recording_authorised"}
    await conn.execute(
        "UPDATE ledger SET payload = $1::jsonb, kind = 'recording_authorised', hash = $2 "
        "WHERE seq = 2",
        json.dumps(payload),
        record_hash(row["prev_hash"], payload),
    )


# (what the superuser did, how, first broken seq reported, reason, records verified before it)
TAMPERING: list[tuple[str, Any, int, str, int]] = [
    (
        "payload rewritten",
        "UPDATE ledger SET payload = jsonb_set(payload, '{channel}', '\"kafka\"') WHERE seq = 2",
        2,
        "hash does not match the record",
        1,
    ),
    ("payload rewritten and rehashed", _rewrite_seq2_and_rehash, 3, "prev_hash is not", 2),
    ("record removed", "DELETE FROM ledger WHERE seq = 2", 3, "seq is not contiguous", 1),
    (
        "column changed",
        "UPDATE ledger SET kind = 'recording_authorised' WHERE seq = 2",
        2,
        "columns disagree",
        1,
    ),
    ("tail cut", "DELETE FROM ledger WHERE seq = 4", 4, "chain_head does not name", 3),
]


@pytest.mark.parametrize(
    ("tamper", "broken_seq", "reason", "verified"),
    [pytest.param(*t[1:], id=t[0]) for t in TAMPERING],
)
async def test_superuser_tampering_is_caught_by_verify(
    pool: asyncpg.Pool,
    superuser: asyncpg.Connection,
    tamper: Any,
    broken_seq: int,
    reason: str,
    verified: int,
) -> None:
    async with pool.acquire() as conn:
        entries = await append(
            conn,
            [a_record(channel="api"), a_record("recording_refused", channel="api")]
            + [a_record(channel="api") for _ in range(2)],
        )
    await superuser.execute("ALTER TABLE ledger DISABLE TRIGGER ledger_append_only")
    if callable(tamper):
        await tamper(superuser)
    else:
        await superuser.execute(tamper)
    await superuser.execute("ALTER TABLE ledger ENABLE TRIGGER ledger_append_only")

    async with pool.acquire() as conn:
        report = await verify(conn)
    assert not report.ok
    assert report.broken_seq == broken_seq
    assert report.reason is not None and report.reason.startswith(reason)
    assert report.expected != report.stored
    assert report.count == report.head_seq == verified
    if tamper == TAMPERING[0][1]:
        assert (report.head_hash, report.stored) == (entries[0].hash, entries[1].hash)


@pytest.mark.parametrize("per_append", [1, 5])
async def test_concurrent_appends_make_one_unbroken_chain(
    database: Database, per_append: int
) -> None:
    tasks, records_per_task = 20, 10

    async def writer(task: int) -> list[int]:
        conn = await asyncpg.connect(
            database.service_dsn, server_settings={"search_path": SCHEMA.schema}
        )
        seqs: list[int] = []
        try:
            for start in range(0, records_per_task, per_append):
                batch = [a_record(task=task, n=n) for n in range(start, start + per_append)]
                seqs += [entry.seq for entry in await append(conn, batch)]
        finally:
            await conn.close()
        return seqs

    results = await asyncio.gather(*(writer(task) for task in range(tasks)))

    total = tasks * records_per_task
    assert sorted(seq for seqs in results for seq in seqs) == list(range(1, total + 1))
    conn = await asyncpg.connect(
        database.service_dsn, server_settings={"search_path": SCHEMA.schema}
    )
    try:
        rows = await ledger_rows(conn)
        report = await verify(conn)
    finally:
        await conn.close()
    assert [row["seq"] for row in rows] == list(range(1, total + 1))
    assert len({row["prev_hash"] for row in rows}) == total  # no two children of one record
    for task, seqs in enumerate(results):
        mine = [json.loads(row["payload"]) for row in rows if row["seq"] in set(seqs)]
        assert [record["n"] for record in mine] == list(range(records_per_task))
        assert {record["task"] for record in mine} == {task}
    assert report.ok and report.count == total and report.head_seq == total


async def test_migrate_twice_is_safe(database: Database, pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await append(conn, [a_record()])
    again = await migrate(database.owner_dsn, SCHEMA, service_password=database.service_password)
    assert again == []
    async with pool.acquire() as conn:
        await append(conn, [a_record()])
        assert await conn.fetchval("SELECT count(*) FROM chain_head") == 1
        report = await verify(conn)
    assert report.ok and report.count == 2
