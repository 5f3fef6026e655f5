"""A person's rights across every service, on the real stack (`visio-rdv up`, as in
test_end_to_end): an appointment booked, rescheduled and confirmed; then its person erased by
an operator's command — and nothing of their name or address left in any table of any schema,
in the SMTP sink, in the advisor's calendar event or in any process's log, even after a dead
letter carrying them is replayed; the consent ledger still verifies."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaProducer
from visio_fakes.devca import ensure_dev_ca
from visio_runtime.settings import ServiceSettings
from visio_runtime.topic_reader import read_topics
from visio_shared import Headers, Topics

from .self_service_support import Mailbox, wait_for
from .test_end_to_end import RunningStack, booking_body, second_terminal, stack

__all__ = ["stack"]  # the module's own stack: `up` started once for these tests

FIRST, LAST = "Zéphyrine", "Quillebeuf"
EMAIL = "zephyrine.quillebeuf@example.fr"
MOBILE = "+262692417385"  # as booking keeps it (E.164), from « 0692 41 73 85 »
# What must leave no trace: the name, whole or in part, the address (its local part too) and
# the mobile, in either form.
TRACES = (FIRST, LAST, EMAIL, EMAIL.split("@")[0], "Quillebeuf".lower(), MOBILE, "692417385")
SCHEMAS = ("booking", "meetings", "notifications", "consent", "alerts")


def _prefix(stack: RunningStack) -> str:
    recorded = json.loads((stack.var / "stack.json").read_text())
    return str(recorded["topic_prefix"])


def _kafka(stack: RunningStack) -> ServiceSettings:
    recorded = json.loads((stack.var / "stack.json").read_text())
    return ServiceSettings(
        kafka_bootstrap_servers=recorded["kafka_bootstrap_servers"],
        topic_prefix=_prefix(stack),
    )


async def _rows_naming_the_person(owner_dsn: str) -> list[str]:
    """Every row of every table of every service's schema, as text, that names the person."""
    found = []
    conn = await asyncpg.connect(owner_dsn)
    try:
        tables = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema = ANY($1::text[]) AND table_type = 'BASE TABLE'",
            list(SCHEMAS),
        )
        for table in tables:
            name = f'"{table["table_schema"]}"."{table["table_name"]}"'
            for row in await conn.fetch(f"SELECT t::text AS line FROM {name} t"):
                line = row["line"]
                if any(trace.lower() in line.lower() for trace in TRACES):
                    found.append(f"{name}: {line[:200]}")
    finally:
        await conn.close()
    return found


def _files_naming_the_person(folder: Path) -> list[str]:
    found = []
    for path in folder.rglob("*"):
        if not path.is_file() or path.suffix in (".sqlite", ".pem", ".key"):
            continue
        text = path.read_bytes().decode("utf-8", errors="replace").lower()
        if any(trace.lower() in text for trace in TRACES):
            found.append(str(path.relative_to(folder)))
    return found


def _calendar(stack: RunningStack) -> str:
    ca = ensure_dev_ca(stack.var / "dev-ca")
    with httpx.Client(base_url=stack.graph, verify=ca.ssl_context(), trust_env=False) as graph:
        return graph.get("/_emulator/events").text


def _traces(stack: RunningStack) -> dict[str, Any]:
    return {
        "tables": asyncio.run(_rows_naming_the_person(stack.owner_dsn)),
        "mail": _files_naming_the_person(stack.var / "mail"),
        "logs": _files_naming_the_person(stack.var / "log"),
        "calendar": any(t.lower() in _calendar(stack).lower() for t in TRACES),
    }


async def _dead_letter_of_the_booking(stack: RunningStack, appointment_id: uuid.UUID) -> uuid.UUID:
    """Put in notifications' dead-letter topic the person's AppointmentRequested, under a new
    event id — as a request re-emitted after the processed-event markers were purged would
    come: nothing but the erased ids stands between it and the person's data."""
    settings = _kafka(stack)
    topics = Topics(settings.topic_prefix)
    records = await read_topics(settings, [topics.appointments])
    original = next(
        r
        for r in records
        if r.key == str(appointment_id).encode()
        and json.loads(r.value)["event_type"] == "AppointmentRequested"
    )
    event = json.loads(original.value) | {"event_id": str(uuid.uuid4())}
    headers = {key: value.decode() for key, value in original.headers}
    headers |= {
        Headers.EVENT_ID: event["event_id"],
        Headers.DLQ_SOURCE_TOPIC: topics.appointments,
        Headers.DLQ_SOURCE_PARTITION: str(original.partition),
        Headers.DLQ_SOURCE_OFFSET: str(original.offset),
        Headers.DLQ_CONSUMER_GROUP: topics.group("notifications"),
        Headers.DLQ_ERROR_CLASS: "Transient",
        Headers.DLQ_REASON: "SMTP relay unreachable (test)",
        Headers.DLQ_ATTEMPTS: "5",
        Headers.DLQ_FIRST_FAILED_AT: datetime.now(UTC).isoformat(),
        Headers.DLQ_DEAD_LETTERED_AT: datetime.now(UTC).isoformat(),
    }
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(
            topics.dlq("notifications"),
            json.dumps(event).encode(),
            key=original.key,
            headers=[(key, value.encode()) for key, value in headers.items()],
        )
    finally:
        await producer.stop()
    return uuid.UUID(event["event_id"])


def _processed_everywhere(owner_dsn: str, event_id: uuid.UUID) -> bool:
    async def check() -> bool:
        conn = await asyncpg.connect(owner_dsn)
        try:
            for schema in ("meetings", "notifications", "consent"):
                found = await conn.fetchval(
                    f"SELECT 1 FROM {schema}.processed_events WHERE event_id = $1", event_id
                )
                if found is None:
                    return False
            return True
        finally:
            await conn.close()

    return asyncio.run(check())


def test_an_erasure_leaves_no_trace_and_survives_a_replay(stack: RunningStack) -> None:
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    mailbox = Mailbox(stack.var / "mail")
    body = booking_body(
        subject=f"Prime d'activité de {FIRST} {LAST}",
        user={
            "first_name": FIRST,
            "last_name": LAST,
            "email": EMAIL,
            "device": "computer",
            "mobile": "0692 41 73 85",
            "sms_opt_in": True,
        },
    )
    with httpx.Client(base_url=stack.booking, headers=headers, trust_env=False) as client:
        answer = client.post("/v1/appointments", json=body)
        assert answer.status_code == 202, answer.text
        appointment_id = uuid.UUID(answer.json()["appointment_id"])
        path = f"/v1/appointments/{appointment_id}"
        wait_for(lambda: client.get(path).json()["status"] == "confirmed", 90, "confirmed")
        later = datetime.fromisoformat(body["start"]) + timedelta(hours=2)
        moved = client.post(f"{path}/reschedule", json={"start": later.isoformat()})
        assert moved.status_code == 202, moved.text
        rescheduled = mailbox.wait(appointment_id, "rescheduled", 90)
        wait_for(lambda: client.get(path).json()["status"] == "confirmed", 90, "confirmed again")

    # The person's export, from the link of their last email: every service's part.
    consents = rescheduled.links()["Mes consentements"]
    with httpx.Client(trust_env=False, timeout=30) as browser:
        # The email may arrive before consent has read the reschedule: its pages say « en cours
        # de mise à jour » (503) until it has, as a person would see before trying again.
        wait_for(lambda: browser.get(consents).status_code == 200, 60, "consent to read the change")
        whole = browser.get(f"{consents}/mes-donnees.json")
        page = browser.get(f"{consents}/mes-donnees")
    assert whole.status_code == 200, whole.text
    export = whole.json()
    assert export["complete"] and export["incomplete"] == [], export["incomplete"]
    parts = {part["service"]: part["data"] for part in export["services"]}
    steps = [h["step"] for h in parts["booking"]["history"]]
    assert {"requested", "meeting_ready", "confirmed", "rescheduled"} <= set(steps), steps
    assert parts["booking"]["appointments"][0]["mobile"] == MOBILE
    assert "texts" in parts["notifications"]  # the text log, whatever the provider did
    sent = {(e["kind"], e["status"]) for e in parts["notifications"]["emails"]}
    assert {("confirmation", "sent"), ("rescheduled", "sent")} <= sent, sent
    assert parts["meetings"]["meetings"][0]["status"] == "ready"
    kinds = {r["kind"]: r for r in export["consent"]["records"]}
    assert {"cgu_accepted", "recording_authorised"} <= set(kinds)
    assert re.fullmatch(r"[0-9a-f]{64}", kinds["cgu_accepted"]["hash"])
    assert export["recorded"]["kind"] == "access_exported"  # the request itself, in the ledger
    # …and in the list of who asked, shown to the person: this export the latest of them.
    assert export["consent"]["access_requests"][-1]["channel"] == "self_service"
    assert page.status_code == 200 and "Vos rendez-vous" in page.text
    assert "<details>" in page.text and "Éléments de preuve" in page.text
    assert LAST in page.text and "Rendez-vous déplacé" in page.text

    # Before: the checks below see the person where they are (else they would prove nothing).
    before = _traces(stack)
    assert before["tables"] and before["mail"] and before["calendar"], before

    visio_rdv, _ = second_terminal(stack)
    signed = visio_rdv("consent", "checkpoint")  # so `consent verify` has a checkpoint to trust
    assert signed.returncode == 0, signed.stdout + signed.stderr
    asked = visio_rdv(
        "ops", "erasure", "request", "--email", EMAIL, "--reason", "demande de la personne"
    )
    assert asked.returncode == 0, asked.stderr
    erasure_id = re.search(r"erasure (\S+):", asked.stdout)
    assert erasure_id is not None, asked.stdout

    def confirmed_by_all() -> str | None:
        done = visio_rdv("ops", "erasure", "status", erasure_id[1])
        return done.stdout if done.returncode == 0 else None

    status = wait_for(confirmed_by_all, 90, "every service to confirm the erasure")
    for service in ("booking", "meetings", "notifications", "consent"):
        assert f"{service} ✓" in status, status

    assert _traces(stack) == {"tables": [], "mail": [], "logs": [], "calendar": False}

    # A dead letter carrying the person, replayed: every service skips it, nothing comes back.
    replayed_id = asyncio.run(_dead_letter_of_the_booking(stack, appointment_id))
    replayed = visio_rdv("ops", "dlq", "replay", "--service", "notifications")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    wait_for(
        lambda: _processed_everywhere(stack.owner_dsn, replayed_id),
        90,
        "every service to read the replayed request",
    )
    assert _traces(stack) == {"tables": [], "mail": [], "logs": [], "calendar": False}

    verified = visio_rdv("consent", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
