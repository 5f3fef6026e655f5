"""`visio-rdv proof tamper`: a database superuser rewrites the consent ledger six ways (alter
a record, delete one, swap two, rewrite one and recompute every hash after it; and, after the
newest signed checkpoint, cut the tail and rewrite a tail record with every hash after it
recomputed); each time `visio-rdv consent verify` must report it broken. Each attack runs on
its own copy of a ledger that verified, with a signed checkpoint and an unsigned tail whose
records their ConsentRecorded events announced, so one attack cannot hide or cause another's
verdict. The tail attacks leave a chain that verifies and a checkpoint that still matches:
only the announcements catch them."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
from visio_consent.ledger import record_hash
from visio_testing import create_database, drop_database, with_database

from visio_deploy.proof import bookings, observe
from visio_deploy.proof.report import Report
from visio_deploy.proof.stack import ProofStack, proof_stack, server_url

Attack = Callable[[asyncpg.Connection], Awaitable[None]]


async def _alter(conn: asyncpg.Connection) -> None:
    await conn.execute(
        'UPDATE consent.ledger SET payload = payload || \'{"channel": "forged"}\' WHERE seq = 2'
    )


async def _delete(conn: asyncpg.Connection) -> None:
    await conn.execute("DELETE FROM consent.ledger WHERE seq = 3")


async def _reorder(conn: asyncpg.Connection) -> None:
    # Through a free seq: the primary key holds at every step.
    await conn.execute("UPDATE consent.ledger SET seq = 1000000 WHERE seq = 2")
    await conn.execute("UPDATE consent.ledger SET seq = 2 WHERE seq = 3")
    await conn.execute("UPDATE consent.ledger SET seq = 3 WHERE seq = 1000000")


async def _rewrite(conn: asyncpg.Connection, seq: int = 2) -> None:
    """The careful forger: change a record, then recompute every link and the head."""
    rows = await conn.fetch(
        "SELECT seq, prev_hash, payload::text AS p FROM consent.ledger ORDER BY seq"
    )
    prev = rows[0]["prev_hash"]
    for row in rows:
        record = json.loads(row["p"])
        if row["seq"] == seq:
            record["channel"] = "forged"
        digest = record_hash(prev, record)
        await conn.execute(
            "UPDATE consent.ledger SET prev_hash = $2, hash = $3, payload = $4::jsonb "
            "WHERE seq = $1",
            row["seq"],
            prev,
            digest,
            json.dumps(record),
        )
        prev = digest
    await conn.execute("UPDATE consent.chain_head SET hash = $1", prev)


ATTACKS: dict[str, Attack] = {
    "alter": _alter,
    "delete": _delete,
    "reorder": _reorder,
    "rewrite with recomputed hashes": _rewrite,
}


def tail_attacks(signed_seq: int) -> dict[str, Attack]:
    """The attacks on what follows the newest checkpoint (`signed_seq`), and the problem verify
    must name for each."""

    async def cut(conn: asyncpg.Connection) -> None:
        await conn.execute("DELETE FROM consent.ledger WHERE seq > $1", signed_seq)
        await conn.execute(
            "UPDATE consent.chain_head SET seq = $1, "
            "hash = (SELECT hash FROM consent.ledger WHERE seq = $1)",
            signed_seq,
        )

    async def rewrite_tail(conn: asyncpg.Connection) -> None:
        await _rewrite(conn, seq=signed_seq + 2)

    return {
        "cut the tail after the last checkpoint": cut,
        "rewrite a tail record with recomputed hashes": rewrite_tail,
    }


# What verify must name for the tail attacks: the chain alone would pass both.
TAIL_PROBLEMS = {
    "cut the tail after the last checkpoint": "missing",
    "rewrite a tail record with recomputed hashes": "altered",
}


def run_tamper(quiet: bool = False) -> Report:
    report = Report("tamper")
    # The schedule signs nothing during the run: the tail stays unsigned until it is attacked.
    quiet_schedule = {"consent": {"CONSENT_CHECKPOINT_INTERVAL_S": "86400"}}
    with proof_stack(seed=7, quiet=quiet, env=quiet_schedule) as proof:
        signed_seq = _fill_ledger(proof, signed=3, unsigned=2)
        # A template database must have no other session; the broker stays up: verify reads
        # the checkpoint and consents topics.
        for name, _ in list(proof.stack.processes):
            if name != "tansu":
                proof.stack.stop_one(name)
        control = observe.consent_verify(proof)
        attacks = {**ATTACKS, **tail_attacks(signed_seq)}
        verdicts = asyncio.run(_attack_copies(proof, attacks))
    report.holds("untouched ledger verifies", control.get("ok") is True)
    report.holds(
        "untouched ledger has an unsigned tail, each record matching its ConsentRecorded",
        control.get("signed_seq") == signed_seq
        and control.get("unsigned", 0) > 0
        and control.get("announced_checked") == control.get("unsigned"),
    )
    report.figures["records"] = control.get("count")
    report.figures["signed up to seq"] = signed_seq
    report.details["control"] = control
    for name, verdict in verdicts.items():
        named = TAIL_PROBLEMS.get(name)
        report.holds(
            f"{name}: detected",
            verdict.get("ok") is False
            and verdict["exit_status"] == 1
            and (named is None or verdict.get("problem") == named),
        )
        report.details[name] = verdict
    return report


def _fill_ledger(proof: ProofStack, signed: int, unsigned: int) -> int:
    """Book `signed` appointments and sign a checkpoint of them, then `unsigned` more; wait
    until each of those is announced. Returns the seq the checkpoint signed."""
    _book(proof, range(signed))
    _wait(proof, lambda verdict: verdict.get("count") == 2 * signed, "the ledger to fill")
    done = observe.consent_command(proof, "checkpoint")
    done.check_returncode()
    signed_seq: int = json.loads(done.stdout)["seq"]
    _book(proof, range(signed, signed + unsigned))
    _wait(
        proof,
        lambda verdict: verdict.get("announced_checked") == 2 * unsigned,
        "the tail to be announced",
    )
    return signed_seq


def _book(proof: ProofStack, numbers: range) -> None:
    headers = {"Authorization": f"Bearer {proof.api_key}"}
    with httpx.Client(base_url=proof.url("booking"), headers=headers, trust_env=False) as client:
        for i in numbers:
            answer = client.post(
                "/v1/appointments",
                json=bookings.booking_body(random.Random(i)),
                headers={"Idempotency-Key": f"tamper-{i}"},
            )
            answer.raise_for_status()


def _wait(proof: ProofStack, until: Callable[[dict[str, Any]], bool], what: str) -> None:
    deadline = time.monotonic() + 90
    while not until(verdict := observe.consent_verify(proof)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited 90 s for {what}; verify said {verdict}")
        time.sleep(0.5)  # polling interval of a wait with a deadline


async def _attack_copies(
    proof: ProofStack, attacks: dict[str, Attack]
) -> dict[str, dict[str, Any]]:
    server = server_url()
    source = proof.owner_dsn.rsplit("/", 1)[1]
    verdicts: dict[str, dict[str, Any]] = {}
    for name, attack in attacks.items():
        copy = await create_database(server, prefix="visio_tamper")
        copy_name = copy.rsplit("/", 1)[1]
        admin = await asyncpg.connect(server)
        await admin.execute(f'DROP DATABASE "{copy_name}"')
        await admin.execute(f'CREATE DATABASE "{copy_name}" TEMPLATE "{source}"')
        await admin.close()
        try:
            conn = await asyncpg.connect(with_database(server, copy_name))
            try:
                # A superuser can switch the append-only triggers off for its session.
                await conn.execute("SET session_replication_role = replica")
                await attack(conn)
            finally:
                await conn.close()
            verdicts[name] = observe.consent_verify(proof, dsn=copy)
        finally:
            await drop_database(server, copy)
    return verdicts
