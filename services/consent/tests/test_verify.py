"""Verification on a real PostgreSQL: a superuser's alteration, deletion, reordering and full
rewrite with recomputed hashes are each found and named; signed checkpoints catch what the
chain alone cannot; random tampering is always noticed (hypothesis)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from visio_consent.ledger import append
from visio_consent.signing import SigningKey
from visio_consent.verify import VerifyReport, verify
from visio_shared.checkpoints import Checkpoint

if TYPE_CHECKING:
    from conftest import Forger

MakeRecord = Callable[..., dict[str, Any]]
RECORDS = 6


async def fill(pool: asyncpg.Pool, make_record: MakeRecord, count: int = RECORDS) -> list[str]:
    """`count` records, one append each; returns their hashes (index 0 is seq 1)."""
    hashes = []
    async with pool.acquire() as conn:
        for _ in range(count):
            (entry,) = await append(conn, [make_record()])
            hashes.append(entry.hash)
    return hashes


async def check(
    pool: asyncpg.Pool, checkpoints: list[Checkpoint] = (), trusted: frozenset[str] = frozenset()
) -> VerifyReport:
    async with pool.acquire() as conn:
        return await verify(conn, checkpoints, trusted)


Tamper = Callable[["Forger"], Awaitable[None]]


def sql(statement: str) -> Tamper:
    async def tamper(forger: Forger) -> None:
        await forger.execute(statement)

    return tamper


async def renumber_after_deletion(forger: Forger) -> None:
    await forger.execute("DELETE FROM ledger WHERE seq = 3")
    await forger.execute("UPDATE ledger SET seq = seq - 1 WHERE seq > 3")


# (how, broken_seq, problem, reason fragment, records verified before it)
CAUGHT_BY_THE_CHAIN: list[tuple[str, Tamper, int, str, str, int]] = [
    (
        "payload changed",
        sql("UPDATE ledger SET payload = payload || '{\"channel\": \"kafka\"}' WHERE seq = 3"),
        3, "altered", "does not match its hash", 2,
    ),
    (
        "column changed",
        sql("UPDATE ledger SET kind = 'recording_authorised' WHERE seq = 3"),
        3, "altered", "columns disagree", 2,
    ),
    (
        "payload changed and its hash recomputed",
        lambda forger: forger.rewrite(3, {"channel": "kafka"}, through_end=False),
        3, "altered", "rewritten and its hash recomputed", 2,
    ),
    (
        "record deleted",
        sql("DELETE FROM ledger WHERE seq = 3"),
        3, "missing", "seq 3 is missing: the next record present is seq 4", 2,
    ),
    (
        "two records deleted",
        sql("DELETE FROM ledger WHERE seq IN (3, 4)"),
        3, "missing", "seq 3 to 4 are missing", 2,
    ),
    (
        "record deleted and the rest renumbered",
        renumber_after_deletion,
        3, "missing", "stored at seq 3 was chained as seq 4", 2,
    ),
    (
        "two records swapped",
        lambda forger: forger.swap(3, 5),
        3, "reordered", "chained as seq 3 is stored at seq 5", 2,
    ),
    (
        "two neighbours swapped",
        lambda forger: forger.swap(2, 3),
        2, "reordered", "chained as seq 2 is stored at seq 3", 1,
    ),
    (
        "seq moved past the end",
        sql("UPDATE ledger SET seq = 99 WHERE seq = 4"),
        4, "reordered", "chained as seq 4 is stored at seq 99", 3,
    ),
    (
        "last record deleted, head left",
        sql("DELETE FROM ledger WHERE seq = 6"),
        6, "missing", "the chain head names seq 6", 5,
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("tamper", "broken_seq", "problem", "reason", "verified"),
    [pytest.param(*case[1:], id=case[0]) for case in CAUGHT_BY_THE_CHAIN],
)
async def test_verify_names_the_first_broken_record(
    pool: asyncpg.Pool,
    forger: Forger,
    make_record: MakeRecord,
    tamper: Tamper,
    broken_seq: int,
    problem: str,
    reason: str,
    verified: int,
) -> None:
    hashes = await fill(pool, make_record)
    assert (await check(pool)).ok

    await tamper(forger)

    report = await check(pool)
    assert not report.ok
    assert (report.broken_seq, report.problem) == (broken_seq, problem), report.describe()
    assert reason in (report.reason or ""), report.describe()
    assert report.count == report.head_seq == verified
    assert report.head_hash == hashes[verified - 1]
    assert report.expected != report.stored
    assert report.describe().startswith(f"BROKEN at seq {broken_seq}: {problem}")


async def test_a_full_rewrite_verifies_alone_and_is_caught_by_a_checkpoint(
    pool: asyncpg.Pool, forger: Forger, make_record: MakeRecord, signing_key: SigningKey
) -> None:
    hashes = await fill(pool, make_record)
    trusted = frozenset({signing_key.public_key})
    signed = [signing_key.sign(2, hashes[1]), signing_key.sign(RECORDS, hashes[-1])]
    intact = await check(pool, signed, trusted)
    assert intact.ok and intact.checkpoints == 2
    assert intact.describe().splitlines()[0] == f"OK {RECORDS} records, head {hashes[-1]}"

    # A superuser changes seq 4 and recomputes every hash after it, and the head: the chain
    # alone holds together again…
    await forger.rewrite(4, {"kind": "recording_authorised"})
    alone = await check(pool)
    assert alone.ok and alone.head_hash != hashes[-1]
    assert "no signed checkpoint checked" in alone.describe()

    # …but not against what was signed before.
    report = await check(pool, signed, trusted)
    assert not report.ok
    assert (report.broken_seq, report.problem) == (RECORDS, "altered")
    assert f"between seq 3 and seq {RECORDS}" in (report.reason or "")
    assert (report.expected, report.stored) == (hashes[-1], alone.head_hash)
    assert (report.head_seq, report.head_hash, report.checkpoints) == (2, hashes[1], 1)


async def test_a_cut_tail_with_a_rewound_head_is_caught_by_a_checkpoint(
    pool: asyncpg.Pool, forger: Forger, make_record: MakeRecord, signing_key: SigningKey
) -> None:
    hashes = await fill(pool, make_record)
    signed = [signing_key.sign(RECORDS, hashes[-1])]
    await forger.cut_tail(5)
    assert (await check(pool)).ok  # the chain alone cannot tell

    report = await check(pool, signed, frozenset({signing_key.public_key}))
    assert (report.ok, report.broken_seq, report.problem) == (False, 5, "missing")
    assert "seq 5 to 6 are missing" in (report.reason or "")


async def test_a_prev_hash_rewritten_after_a_checkpoint_is_named(
    pool: asyncpg.Pool, forger: Forger, make_record: MakeRecord, signing_key: SigningKey
) -> None:
    # Seq 3 is vouched for by a checkpoint, so the record that no longer chains to it is 4.
    hashes = await fill(pool, make_record)
    signed = [signing_key.sign(3, hashes[2])]
    await forger.rewrite(4, {}, through_end=False)
    await forger.execute("UPDATE ledger SET prev_hash = repeat('c', 64) WHERE seq = 4")
    await forger.rewrite(4, {}, through_end=False)

    report = await check(pool, signed, frozenset({signing_key.public_key}))
    assert (report.broken_seq, report.problem) == (4, "altered")
    assert "which a signed checkpoint vouches for" in (report.reason or "")


async def test_checkpoints_must_be_signed_by_a_trusted_key(
    pool: asyncpg.Pool, make_record: MakeRecord, signing_key: SigningKey
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    hashes = await fill(pool, make_record, 2)
    trusted = frozenset({signing_key.public_key})
    genuine = signing_key.sign(2, hashes[-1])
    stranger = SigningKey(Ed25519PrivateKey.generate(), dev=False).sign(2, hashes[-1])
    edited = genuine.model_copy(update={"seq": 1})

    for checkpoint, why in ((stranger, "an untrusted key"), (edited, "a bad signature")):
        report = await check(pool, [checkpoint], trusted)
        assert (report.ok, report.problem) == (False, "bad_checkpoint")
        assert why in (report.reason or "")
    assert (await check(pool, [genuine], trusted)).ok


async def test_verify_since_a_checkpoint_checks_only_what_follows(
    pool: asyncpg.Pool, forger: Forger, make_record: MakeRecord, signing_key: SigningKey
) -> None:
    hashes = await fill(pool, make_record)
    since = signing_key.sign(4, hashes[3])
    async with pool.acquire() as conn:
        report = await verify(conn, since=since)
    assert (report.ok, report.count, report.head_seq) == (True, 2, RECORDS)

    await forger.rewrite(4, {"channel": "kafka"})
    async with pool.acquire() as conn:
        report = await verify(conn, since=since)
    assert (report.ok, report.broken_seq, report.problem) == (False, 4, "altered")


# --- Random tampering ------------------------------------------------------------------------

OPERATIONS = ("payload", "column", "delete", "swap", "rewrite", "rehash_one", "cut_tail", "head")


@st.composite
def tamperings(draw: st.DrawFn, size: int) -> list[tuple[Any, ...]]:
    seqs = st.integers(1, size)
    # PostgreSQL text holds any character but NUL.
    values = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8)
    steps = []
    for _ in range(draw(st.integers(1, 3))):
        operation = draw(st.sampled_from(OPERATIONS))
        if operation == "swap":
            first, second = draw(st.lists(seqs, min_size=2, max_size=2, unique=True))
            steps.append((operation, first, second))
        elif operation == "column":
            column = draw(st.sampled_from(["kind", "hash", "prev_hash", "appointment_id"]))
            steps.append((operation, draw(seqs), column))
        else:
            steps.append((operation, draw(seqs), draw(values)))
    return steps


async def apply(forger: Forger, step: tuple[Any, ...]) -> None:
    operation, seq, extra = step
    if operation == "payload":
        await forger.execute(
            "UPDATE ledger SET payload = jsonb_set(payload, '{channel}', to_jsonb($2::text)) "
            "WHERE seq = $1",
            seq,
            extra,
        )
    elif operation == "column":
        value = {
            "kind": "'recording_withdrawn'",
            "hash": "md5(random()::text) || md5(random()::text)",
            "prev_hash": "md5(random()::text) || md5(random()::text)",
            "appointment_id": "gen_random_uuid()",
        }[extra]
        await forger.execute(f"UPDATE ledger SET {extra} = {value} WHERE seq = $1", seq)
    elif operation == "delete":
        await forger.execute("DELETE FROM ledger WHERE seq = $1", seq)
    elif operation == "swap":
        await forger.swap(seq, extra)
    elif operation in ("rewrite", "rehash_one"):
        if await forger.conn.fetchval("SELECT true FROM ledger WHERE seq = $1", seq):
            await forger.rewrite(seq, {"channel": extra}, through_end=operation == "rewrite")
    elif operation == "cut_tail":
        await forger.cut_tail(seq)
    elif operation == "head":
        await forger.conn.execute("UPDATE chain_head SET seq = $1", seq - 1)


async def snapshot(conn: asyncpg.Connection) -> str:
    rows = await conn.fetch("SELECT l.*, l.payload::text AS text FROM ledger l ORDER BY seq")
    head = await conn.fetchrow("SELECT seq, hash FROM chain_head")
    return json.dumps([[str(value) for value in row.values()] for row in rows] + [list(head)])


@settings(
    max_examples=50,
    deadline=None,
    database=None,  # no .hypothesis folder in the repository
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), size=st.integers(2, 7))
async def test_random_tampering_is_always_noticed(
    pool: asyncpg.Pool,
    forger: Forger,
    make_record: MakeRecord,
    signing_key: SigningKey,
    data: st.DataObject,
    size: int,
) -> None:
    await forger.reset()
    hashes = await fill(pool, make_record, size)
    # The head was signed: everything up to it is covered, as after a checkpoint round.
    signed = [signing_key.sign(size, hashes[-1])]
    before = await snapshot(forger.conn)

    for step in data.draw(tamperings(size), label="tampering"):
        await apply(forger, step)
    assume(await snapshot(forger.conn) != before)  # e.g. a field set to the value it had

    report = await check(pool, signed, frozenset({signing_key.public_key}))
    assert not report.ok, report.describe()
    assert report.problem in ("altered", "missing", "reordered")
    assert report.broken_seq is not None and 1 <= report.broken_seq <= size
