"""The ledger on a real PostgreSQL: chaining, append-only enforcement, concurrency.
(Tamper detection: test_verify.py.)"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
import rfc8785
from visio_consent.ledger import GENESIS_HASH, SCHEMA, append, record_hash, subject_ref
from visio_consent.verify import verify
from visio_runtime.db import SchemaSpec, migrate

if TYPE_CHECKING:
    from conftest import Database

SERVICE_PASSWORD = "visio_consent"  # as the database fixture sets it

MakeRecord = Callable[..., dict[str, Any]]


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


async def test_appends_chain_and_verify(pool: asyncpg.Pool, make_record: MakeRecord) -> None:
    async with pool.acquire() as conn:
        first = await append(conn, [make_record(), make_record("recording_authorised")])
        second = await append(conn, [make_record("recording_refused")])
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


async def test_append_refuses_records_it_could_not_verify_later(
    pool: asyncpg.Pool, make_record: MakeRecord
) -> None:
    async with pool.acquire() as conn:
        for bad in (
            make_record(seq=7),
            make_record(recorded_at="2025-01-01T00:00:00+00:00"),
            make_record(score=0.5),
            {"kind": "cgu_accepted"},
        ):
            with pytest.raises(ValueError):
                await append(conn, [bad])
        assert await conn.fetchval("SELECT count(*) FROM ledger") == 0


async def test_service_role_can_neither_rewrite_nor_fork(
    pool: asyncpg.Pool, make_record: MakeRecord
) -> None:
    async with pool.acquire() as conn:
        await append(conn, [make_record(), make_record()])
        head = await conn.fetchrow("SELECT seq, hash FROM chain_head")
        for statement in (
            "UPDATE ledger SET payload = '{}'::jsonb WHERE seq = 1",
            "DELETE FROM ledger WHERE seq = 2",
            "TRUNCATE ledger",
            "UPDATE chain_head SET seq = 0, hash = repeat('0', 64)",
            "SELECT * FROM chain_head FOR UPDATE",
            "INSERT INTO api_keys (key_hash, name, scopes) "
            "VALUES (repeat('a', 64), 'me', '{consent:read}')",
            "UPDATE api_keys SET revoked_at = NULL",
            # Who asked for whose records: added to, never changed or removed.
            "UPDATE access_requests SET requested_by = 'nobody'",
            "DELETE FROM access_requests",
            "DELETE FROM appointments",
            "DELETE FROM processed_events",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
        insert = (
            "INSERT INTO ledger (seq, prev_hash, hash, recorded_at, kind, appointment_id, "
            "source_event_id, payload) VALUES ($1, $2, repeat('a', 64), now(), "
            "'cgu_accepted', gen_random_uuid(), gen_random_uuid(), '{}')"
        )
        # A record that does not extend the head: the trigger rolls the statement back.
        for seq, prev_hash in ((3, "b" * 64), (4, head["hash"])):
            with pytest.raises(asyncpg.SerializationError, match="does not extend the chain"):
                await conn.execute(insert, seq, prev_hash)
        # One that claims an existing seq, or a second child of a record (a fork): unique keys.
        for seq, prev_hash in ((2, head["hash"]), (3, GENESIS_HASH)):
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.execute(insert, seq, prev_hash)
        assert [row["seq"] for row in await ledger_rows(conn)] == [1, 2]
        assert (await verify(conn)).ok


async def test_owner_and_superuser_are_refused_by_the_trigger(
    pool: asyncpg.Pool, superuser: asyncpg.Connection, make_record: MakeRecord
) -> None:
    async with pool.acquire() as conn:
        await append(conn, [make_record(), make_record()])
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


@pytest.mark.parametrize("per_append", [1, 5])
async def test_concurrent_appends_make_one_unbroken_chain(
    database: Database, per_append: int, make_record: MakeRecord
) -> None:
    tasks, records_per_task = 20, 10

    async def writer(task: int) -> list[int]:
        conn = await asyncpg.connect(
            database.service_dsn, server_settings={"search_path": SCHEMA.schema}
        )
        seqs: list[int] = []
        try:
            for start in range(0, records_per_task, per_append):
                batch = [make_record(task=task, n=n) for n in range(start, start + per_append)]
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


async def test_migrate_twice_is_safe(
    database: Database, pool: asyncpg.Pool, make_record: MakeRecord
) -> None:
    async with pool.acquire() as conn:
        await append(conn, [make_record()])
    again = await migrate(database.owner_dsn, SCHEMA, service_password=database.service_password)
    assert again == []
    async with pool.acquire() as conn:
        await append(conn, [make_record()])
        assert await conn.fetchval("SELECT count(*) FROM chain_head") == 1
        report = await verify(conn)
    assert report.ok and report.count == 2


async def test_a_batch_is_checked_whole_and_refused_whole(
    pool: asyncpg.Pool, make_record: MakeRecord
) -> None:
    async with pool.acquire() as conn:
        await append(conn, [make_record(), make_record()])
        head = await conn.fetchrow("SELECT seq, hash FROM chain_head")
        # Seq 3 extends the head; seq 4 claims a parent that is not seq 3: neither goes in.
        with pytest.raises(asyncpg.SerializationError, match="record seq 4 does not extend"):
            await conn.execute(
                "INSERT INTO ledger (seq, prev_hash, hash, recorded_at, kind, appointment_id, "
                "source_event_id, payload) "
                "SELECT s, p, h, now(), 'cgu_accepted', gen_random_uuid(), gen_random_uuid(), '{}' "
                "FROM unnest($1::bigint[], $2::text[], $3::text[]) AS r(s, p, h)",
                [3, 4],
                [head["hash"], "d" * 64],
                ["c" * 64, "e" * 64],
            )
        assert await conn.fetchval("SELECT count(*) FROM ledger") == 2
        assert await conn.fetchrow("SELECT seq, hash FROM chain_head") == head


async def test_002_upgrades_a_ledger_written_under_001(
    database: Database, pool: asyncpg.Pool, superuser: asyncpg.Connection, tmp_path: Path
) -> None:
    # A fresh schema holding only 001 (the database fixture applied both: start over).
    await superuser.execute("DROP SCHEMA consent CASCADE")
    only_001 = tmp_path / "migrations"
    only_001.mkdir()
    (only_001 / "001_init.sql").write_text((SCHEMA.sql_dir / "001_init.sql").read_text())
    await migrate(database.owner_dsn, SchemaSpec(SCHEMA.schema, only_001), SERVICE_PASSWORD)
    appointment = str(uuid.uuid4())
    record = {"appointment_id": appointment, "subject_ref": "ab" * 32, "revision": 1}
    async with pool.acquire() as conn:
        await append(
            conn,
            [
                {**record, "kind": kind, "cgu_version": "1", "source_event_id": str(uuid.uuid4())}
                for kind in ("cgu_accepted", "recording_authorised")
            ],
        )

    applied = await migrate(database.owner_dsn, SCHEMA, SERVICE_PASSWORD)

    assert applied == [
        "002_checkpoints_access_withdrawal.sql",
        "003_self_service.sql",
        "004_api_key_ids_checkpoint_scope_access_log.sql",
        "005_personal_data.sql",
        "006_caf_code.sql",
    ]
    context = await superuser.fetchrow("SELECT * FROM appointments")
    assert (str(context["appointment_id"]), context["subject_ref"], context["timezone"]) == (
        appointment,
        "ab" * 32,
        "UTC",
    )
    async with pool.acquire() as conn:
        await append(
            conn, [{**record, "kind": "recording_withdrawn", "source_event_id": str(uuid.uuid4())}]
        )
        report = await verify(conn)
    assert report.ok and report.count == 3
