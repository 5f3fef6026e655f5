"""What the proof looks at once the system settles: booking's rows, the consent ledger, the
emulator's meetings, the sink's emails and the dead-letter topics. Read directly (the owner
connection, not through the fault proxy), so a check is never itself cut."""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import subprocess
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import asyncpg
from visio_consent.keys import API_KEYS
from visio_runtime.settings import ServiceSettings

from visio_deploy.ops.dlq import Letter, letters
from visio_deploy.proof.stack import ProofStack
from visio_deploy.up import installed_script

TERMINAL = {"confirmed", "cancelled", "meeting_failed", "notification_failed"}
# notifications' deterministic Message-ID: <appointment.r<revision>.<kind>[-offset]@domain>
_MESSAGE_ID = re.compile(r"<([0-9a-f-]{36})\.r(\d+)\.([a-z_]+)(?:-\d+)?@[^>]+>")


async def appointments(dsn: str) -> dict[str, asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT appointment_id::text AS id, status, status_reason, calling_system, "
            "created_at FROM booking.appointments"
        )
    finally:
        await conn.close()
    return {row["id"]: row for row in rows}


async def kafka_appointments(dsn: str, caller: str) -> dict[str, str]:
    """request_id → appointment id, from booking's idempotency records of that caller."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT key, response FROM booking.idempotency_keys WHERE caller = $1", caller
        )
    finally:
        await conn.close()
    found = {}
    for row in rows:
        answer = json.loads(row["response"] or "{}")
        if answer.get("appointment_id"):
            found[row["key"]] = str(answer["appointment_id"])
    return found


async def consent_key(dsn: str, name: str, scopes: list[str]) -> str:
    """A key to consent's API, made with the owner connection (the service only reads keys)."""
    conn = await asyncpg.connect(dsn)
    try:
        return await API_KEYS.create(conn, name, scopes)
    finally:
        await conn.close()


async def ledger_counts(dsn: str) -> Counter[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT appointment_id::text AS id, count(*) AS n FROM consent.ledger GROUP BY 1"
        )
    finally:
        await conn.close()
    return Counter({row["id"]: row["n"] for row in rows})


@dataclass
class Mail:
    path: Path
    message: EmailMessage
    message_id: str
    appointment_id: str | None
    revision: int | None
    kind: str | None


def mails(mail_dir: Path) -> list[Mail]:
    found = []
    for path in sorted(mail_dir.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        message_id = str(message.get("Message-ID", ""))
        match = _MESSAGE_ID.fullmatch(message_id.strip())
        found.append(
            Mail(
                path,
                message,
                message_id,
                match.group(1) if match else None,
                int(match.group(2)) if match else None,
                match.group(3) if match else None,
            )
        )
    return found


@dataclass
class EmailFigures:
    confirmations: Counter[str] = field(default_factory=Counter)  # distinct Message-IDs
    resends_same_message_id: int = 0
    other_mails: int = 0


def email_figures(found: list[Mail]) -> EmailFigures:
    figures = EmailFigures()
    ids: defaultdict[str, set[str]] = defaultdict(set)
    copies: Counter[str] = Counter()
    for mail in found:
        if mail.appointment_id is None or mail.kind != "confirmation":
            figures.other_mails += 1  # alerts to Caf teams, reminders
            continue
        ids[mail.appointment_id].add(mail.message_id)
        copies[mail.message_id] += 1
    figures.confirmations = Counter({a: len(m) for a, m in ids.items()})
    figures.resends_same_message_id = sum(n - 1 for n in copies.values())
    return figures


def header_problems(mail: Mail) -> list[str]:
    """Headers that a CR/LF or a raw byte from user input could have broken."""
    problems = [f"defect {type(d).__name__}" for d in mail.message.defects]
    for name, value in mail.message.items():
        if "\r" in str(value) or "\n" in str(value):
            problems.append(f"line break in {name}")
    for name in ("To", "From", "Subject", "Message-ID", "Date"):
        if len(mail.message.get_all(name, [])) != 1:
            problems.append(f"{name} not exactly once")
    return problems


async def dead_letters(proof: ProofStack) -> list[Letter]:
    settings = ServiceSettings(
        kafka_bootstrap_servers=proof.bootstrap, topic_prefix=proof.settings.topic_prefix
    )
    return await letters(settings)


def consent_command(
    proof: ProofStack, *args: str, dsn: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`visio-rdv consent …`, as an operator runs it against this run's ledger."""
    env = {
        **os.environ,
        "VISIO_VAR_DIR": str(proof.var),  # this run's stack, never one `up` runs beside it
        "VISIO_DATABASE_URL": dsn or proof.owner_dsn,
        "CONSENT_VAR_DIR": str(proof.var / "consent"),
        "CONSENT_TOPIC_PREFIX": proof.settings.topic_prefix,
        "CONSENT_KAFKA_BOOTSTRAP_SERVERS": proof.bootstrap,
    }
    env.pop("CONSENT_DATABASE_URL", None)
    return subprocess.run(  # noqa: S603 - our own command
        [installed_script("visio-rdv"), "consent", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def consent_verify(proof: ProofStack, dsn: str | None = None) -> dict[str, Any]:
    """`visio-rdv consent verify --json`: its report, and its exit status."""
    done = consent_command(proof, "verify", "--json", dsn=dsn)
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        report = {"ok": False, "problem": "unreadable", "output": done.stdout + done.stderr}
    report["exit_status"] = done.returncode
    return report
