"""`visio-rdv proof tamper`: a database superuser rewrites the consent ledger four ways (alter
a record, delete one, swap two, rewrite one and recompute every hash after it); each time
`visio-rdv consent verify` must report it broken. Each attack runs on its own copy of a ledger
that verified, with signed checkpoints, so one attack cannot hide or cause another's verdict."""

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

from visio_deploy.proof import bookings, observe
from visio_deploy.proof.report import Report
from visio_deploy.proof.stack import ProofStack, proof_stack, server_url
from visio_deploy.testing import create_database, drop_database, with_database

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


async def _rewrite(conn: asyncpg.Connection) -> None:
    """The careful forger: change a record, then recompute every link and the head."""
    rows = await conn.fetch(
        "SELECT seq, prev_hash, payload::text AS p FROM consent.ledger ORDER BY seq"
    )
    prev = rows[0]["prev_hash"]
    for row in rows:
        record = json.loads(row["p"])
        if row["seq"] == 2:
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


def run_tamper(quiet: bool = False) -> Report:
    report = Report("tamper")
    with proof_stack(seed=7, quiet=quiet) as proof:
        _fill_ledger(proof, appointments=3)
        proof.stack.stop_all()  # a template database must have no other session
        control = observe.consent_verify(proof)
        verdicts = asyncio.run(_attack_copies(proof))
    report.holds("untouched ledger verifies", control.get("ok") is True)
    report.figures["records"] = control.get("count")
    for name, verdict in verdicts.items():
        report.holds(
            f"{name}: detected", verdict.get("ok") is False and verdict["exit_status"] == 1
        )
        report.details[name] = verdict
    return report


def _fill_ledger(proof: ProofStack, appointments: int) -> None:
    headers = {"Authorization": f"Bearer {proof.api_key}"}
    with httpx.Client(base_url=proof.url("booking"), headers=headers, trust_env=False) as client:
        for i in range(appointments):
            answer = client.post(
                "/v1/appointments",
                json=bookings.booking_body(random.Random(i)),
                headers={"Idempotency-Key": f"tamper-{i}"},
            )
            answer.raise_for_status()
    deadline = time.monotonic() + 90
    while asyncio.run(observe.ledger_counts(proof.owner_dsn)).total() < 2 * appointments:
        if time.monotonic() > deadline:
            raise TimeoutError("the ledger did not fill")
        time.sleep(0.5)  # polling interval of a wait with a deadline
    observe.consent_command(proof, "checkpoint").check_returncode()


async def _attack_copies(proof: ProofStack) -> dict[str, dict[str, Any]]:
    server = server_url()
    source = proof.owner_dsn.rsplit("/", 1)[1]
    verdicts: dict[str, dict[str, Any]] = {}
    for name, attack in ATTACKS.items():
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
