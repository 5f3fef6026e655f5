"""`visio-rdv proof access`: what must be refused is refused — booking without a key, with a
revoked key, with a key lacking the scope, another system's appointment (over HTTP and, for a
partner on Kafka, over its topic; and a partner claiming another's name); consent's access
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
from aiokafka import AIOKafkaProducer
from visio_booking.keys import API_KEYS
from visio_runtime.settings import ServiceSettings
from visio_runtime.topic_reader import partitions, reader
from visio_shared import Headers, Topics
from visio_shared.events import MeetingReady

from visio_deploy.proof import bookings, observe, partners
from visio_deploy.proof.partners import ReplyReader
from visio_deploy.proof.report import Report
from visio_deploy.proof.stack import ProofStack, proof_stack

EVIL_URL = "https://teams.evil.example/l/meetup-join/phish"


def run_access(quiet: bool = False, proof: ProofStack | None = None) -> Report:
    """On a stack of its own, or on `proof` (the suite shares one with `proof inputs`)."""
    if proof is not None:
        return asyncio.run(_access(proof))
    with proof_stack(seed=3, quiet=quiet, name="access") as fresh:
        return asyncio.run(_access(fresh))


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

    await _over_kafka(proof, report, appointment)
    failure = await _non_teams_join_url(proof)
    report.holds("non-Teams join URL: refused (NotificationFailed)", failure is not None)
    report.figures["forged internal event written to meetings.v1 by an outsider"] = True
    report.notes.append(
        "The local broker (tansu) has no ACLs: any client wrote the forged MeetingReady to "
        "meetings.v1, and the booking request claiming another partner's name. In production "
        "only the broker's ACLs (one producing principal per topic, generated with the AsyncAPI "
        "document) keep anyone but meetings off meetings.v1 and each partner off another's "
        "request topic; this proof shows what the services refuse on their own (a join URL "
        "that is not Teams', another system's appointment)."
    )
    leaked = [m.path.name for m in observe.mails(proof.var / "mail") if EVIL_URL in str(m.message)]
    report.zero("emails carrying the non-Teams URL", len(leaked))
    # Our processes' logs. Not the SMTP sink's: it stands for the Caf's relay, whose own log of
    # recipients is the relay's business (and it logs them once the confirmation has gone,
    # which on a warm stack is before this reads).
    logs = "".join(
        p.read_text(errors="replace")
        for p in proof.stack.logs.glob("*.log")
        if p.name != "smtp-sink.log"
    )
    personal = [body["user"]["email"], body["user"]["first_name"] + " " + body["user"]["last_name"]]
    report.zero("log lines with personal data", sum(logs.count(value) for value in personal))
    report.details = {"notification_failed": failure}
    return report


async def _over_kafka(proof: ProofStack, report: Report, appointment: str) -> None:
    """A partner on Kafka touching an appointment another system booked over HTTP: by its own
    name (refused: 404, as over HTTP), then claiming the owner's name in its request."""
    topics = Topics(proof.settings.topic_prefix)
    partner = bookings.KAFKA_CALLER
    owner = await _calling_system(proof, appointment)
    reply_topic = partners.reply_topic(topics, partner)
    async with ReplyReader(proof.bootstrap, reply_topic, partner) as replies:
        producer = AIOKafkaProducer(bootstrap_servers=proof.bootstrap, acks="all")
        await producer.start()
        try:
            deadline = time.monotonic() + 60
            request_topic = partners.request_topic(topics, partner)
            own = f"access-{uuid.uuid4().hex[:8]}"
            body = bookings.kafka_request(
                {"reason": "user"}, own, "CancelAppointment", appointment, caller=partner
            )
            await bookings.send_over_kafka(producer, request_topic, body, own, deadline)
            answers = await replies.wait(own, 60)
            refused = [a.get("status") for a in answers if a.get("event_type") == "BookingRejected"]
            report.holds("kafka, another system's appointment: 404", refused == [404])
            posing = f"access-{uuid.uuid4().hex[:8]}"
            body = bookings.kafka_request(
                {"reason": "user"}, posing, "CancelAppointment", appointment, caller=owner
            )
            await bookings.send_over_kafka(producer, request_topic, body, posing, deadline)
            status = await _status_after(proof, appointment, within_s=15)
        finally:
            await producer.stop()
    name = "kafka, a partner claiming another's name on its own topic: refused"
    if partners.per_partner_topics(topics):
        report.holds(name, status != "cancelled")
    else:
        report.figures[name] = (
            f"NOT PREVENTED (one request topic for every partner: the claim decides; the "
            f"appointment is now {status})"
        )
        report.notes.append(
            "Kafka partners share one request topic today, so booking takes the caller from "
            "the request itself: a partner claiming another's name acts as it. Per-partner "
            "topics, which only that partner's principal may write (ACLs), end that; this "
            "check becomes a must-hold as soon as `partners.request_topic` names them."
        )


async def _calling_system(proof: ProofStack, appointment: str) -> str:
    conn = await asyncpg.connect(proof.owner_dsn)
    try:
        owner: str = await conn.fetchval(
            "SELECT calling_system FROM booking.appointments WHERE appointment_id = $1::uuid",
            appointment,
        )
    finally:
        await conn.close()
    return owner


async def _status_after(proof: ProofStack, appointment: str, within_s: float) -> str:
    """The appointment's status once `within_s` passed, or as soon as it is cancelled."""
    deadline = time.monotonic() + within_s
    while True:
        rows = await observe.appointments(proof.owner_dsn)
        status = str(rows[appointment]["status"])
        if status == "cancelled" or time.monotonic() > deadline:
            return status
        await asyncio.sleep(1)  # polling interval of a wait with a deadline


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


MEETINGS_ANSWERS = frozenset({"MeetingReady", "MeetingFailed"})


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
        # meetings answers the replayed request (its genuine link, or a failure): the forged
        # event goes after that answer, or the answer (same revision, later) would replace it
        # before the appointment reaches notifications, and the proof would race meetings.
        await _find_event(proof, topics.meetings, str(appointment_id), MEETINGS_ANSWERS)
        await producer.send_and_wait(
            topics.meetings,
            ready.to_json_bytes(),
            key=key,
            headers=[(k, v.encode()) for k, v in Headers.for_event(ready).items()],
        )
    finally:
        await producer.stop()
    return await _find_event(
        proof, topics.notifications, str(appointment_id), frozenset({"NotificationFailed"})
    )


async def _find_event(
    proof: ProofStack, topic: str, appointment_id: str, event_types: frozenset[str]
) -> dict[str, object] | None:
    """Read `topic` from its beginning (its partitions from fresh metadata: a new client's
    cached metadata may not list it yet) until one of the appointment's `event_types`, for a
    minute."""
    settings = ServiceSettings(kafka_bootstrap_servers=proof.bootstrap)
    tps = await partitions(settings, [topic])
    async with reader(settings) as consumer:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    try:
                        event = json.loads(record.value or b"")
                    except (ValueError, RecursionError):  # a hostile record (`proof inputs`)
                        continue
                    if not isinstance(event, dict):
                        continue
                    if event.get("appointment_id") == appointment_id:
                        if event.get("event_type") in event_types:
                            return {k: event.get(k) for k in ("kind", "reason", "detail")}
    return None
