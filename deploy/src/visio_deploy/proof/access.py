"""`visio-rdv proof access`: what must be refused is refused — booking without a key, with a
revoked key, with a key lacking the scope, another system's appointment; consent's access
export and withdrawal without a key; a MeetingReady whose join URL is not Teams' (notifications
must not mail it) — and no service logged the personal data these requests carried."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from visio_booking.keys import API_KEYS
from visio_shared import Headers, Topics
from visio_shared.events import MeetingReady

from visio_deploy.proof import bookings, observe
from visio_deploy.proof.report import Report
from visio_deploy.proof.stack import ProofStack, proof_stack

EVIL_URL = "https://teams.evil.example/l/meetup-join/phish"


def run_access(quiet: bool = False) -> Report:
    with proof_stack(seed=3, quiet=quiet) as proof:
        return asyncio.run(_access(proof))


async def _access(proof: ProofStack) -> Report:
    report = Report("access")
    conn = await asyncpg.connect(proof.owner_dsn)
    try:
        reader = await API_KEYS.create(conn, "proof-reader", ["appointments:read"])
        other = await API_KEYS.create(conn, "proof-other", ["appointments:read"])
        revoked = await API_KEYS.create(conn, "proof-revoked", ["appointments:write"])
        await API_KEYS.revoke(conn, "proof-revoked")
    finally:
        await conn.close()
    body = bookings.booking_body(random.Random(11))
    booking = proof.url("booking")
    async with httpx.AsyncClient(base_url=booking, trust_env=False, timeout=10) as client:
        mine = await client.post("/v1/appointments", json=body, headers=_bearer(proof.api_key))
        appointment = mine.json()["appointment_id"]
        answers = {
            "booking, no key": await client.post("/v1/appointments", json=body),
            "booking, revoked key": await client.post(
                "/v1/appointments", json=body, headers=_bearer(revoked)
            ),
            "booking, wrong scope": await client.post(
                "/v1/appointments", json=body, headers=_bearer(reader)
            ),
            "booking, another system's appointment": await client.get(
                f"/v1/appointments/{appointment}", headers=_bearer(other)
            ),
        }
    consent = proof.url("consent")
    async with httpx.AsyncClient(base_url=consent, trust_env=False, timeout=10) as client:
        answers["consent access, no key"] = await client.post(
            "/v1/access", json={"email": body["user"]["email"]}
        )
        answers["consent withdrawal, no key"] = await client.post(
            f"/v1/appointments/{appointment}/recording-withdrawal"
        )
    expected = {"no key": 401, "revoked": 401, "scope": 403, "another": 404}
    for name, answer in answers.items():
        want = next(code for word, code in expected.items() if word in name)
        report.holds(f"{name}: {want}", answer.status_code == want)

    failure = await _non_teams_join_url(proof)
    report.holds("non-Teams join URL: refused (NotificationFailed)", failure is not None)
    leaked = [m.path.name for m in observe.mails(proof.var / "mail") if EVIL_URL in str(m.message)]
    report.zero("emails carrying the non-Teams URL", len(leaked))
    logs = "".join(p.read_text(errors="replace") for p in proof.stack.logs.glob("*.log"))
    personal = [body["user"]["email"], body["user"]["first_name"] + " " + body["user"]["last_name"]]
    report.zero("log lines with personal data", sum(logs.count(value) for value in personal))
    report.details = {"notification_failed": failure}
    return report


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _non_teams_join_url(proof: ProofStack) -> dict[str, object] | None:
    """Replay a real AppointmentRequested under a new id, then a forged MeetingReady for it
    carrying a phishing link; notifications must answer NotificationFailed, not an email."""
    conn = await asyncpg.connect(proof.owner_dsn)
    try:
        payload = await conn.fetchval(
            "SELECT payload FROM booking.outbox WHERE headers->>'event_type' = "
            "'AppointmentRequested' ORDER BY id LIMIT 1"
        )
    finally:
        await conn.close()
    topics = Topics(proof.settings.topic_prefix)
    appointment_id, correlation_id = uuid.uuid4(), uuid.uuid4()
    requested = json.loads(payload) | {
        "event_id": str(uuid.uuid4()),
        "appointment_id": str(appointment_id),
        "correlation_id": str(correlation_id),
    }
    ready = MeetingReady(
        appointment_id=appointment_id,
        correlation_id=correlation_id,
        revision=1,
        join_url=EVIL_URL,
        graph_event_id="forged",
        advisor_id=requested["advisor"]["id"],
    )
    key = str(appointment_id).encode()
    producer = AIOKafkaProducer(bootstrap_servers=proof.bootstrap, acks="all")
    await producer.start()
    try:
        request_headers = {
            Headers.EVENT_ID: requested["event_id"],
            Headers.EVENT_TYPE: "AppointmentRequested",
            Headers.CORRELATION_ID: requested["correlation_id"],
        }
        await producer.send_and_wait(
            topics.appointments,
            json.dumps(requested).encode(),
            key=key,
            headers=[(k, v.encode()) for k, v in request_headers.items()],
        )
        await producer.send_and_wait(
            topics.meetings,
            ready.to_json_bytes(),
            key=key,
            headers=[(k, v.encode()) for k, v in Headers.for_event(ready).items()],
        )
    finally:
        await producer.stop()
    return await _find_failure(proof, topics.notifications, str(appointment_id))


async def _find_failure(
    proof: ProofStack, topic: str, appointment_id: str
) -> dict[str, object] | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=proof.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    event = json.loads(record.value)
                    if event.get("appointment_id") == appointment_id:
                        if event.get("event_type") == "NotificationFailed":
                            return {k: event.get(k) for k in ("kind", "reason", "detail")}
    finally:
        await consumer.stop()
    return None
