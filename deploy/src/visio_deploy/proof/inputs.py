"""`visio-rdv proof inputs`: hypothesis-generated hostile bookings to the HTTP API and to
`booking-requests.v1`. Each must get a clear answer (problem+json; a BookingRejected reply; a
dead letter with its reason when there is no one to answer), the services must stay up, no
partial appointment may be stored, and every email sent must have escaped text and intact
headers."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from hypothesis import HealthCheck, given, seed, settings
from visio_shared import Topics

from visio_deploy.proof import observe
from visio_deploy.proof.hostile import RAW_MARKUP, hostile_input
from visio_deploy.proof.report import Report
from visio_deploy.proof.stack import ProofStack, proof_stack

CALLER = "proof-hostile"
CLEAR_STATUSES = {400, 413, 415, 422}


@dataclass
class Tally:
    http_tried: int = 0
    http_accepted: list[str] = field(default_factory=list)
    http_statuses: Counter[int] = field(default_factory=Counter)
    http_unclear: list[str] = field(default_factory=list)
    http_resets: int = 0
    kafka: list[tuple[bytes, str | None]] = field(default_factory=list)  # value, request_id


def run_inputs(examples: int, seed_value: int = 1, quiet: bool = False) -> Report:
    with proof_stack(seed=seed_value, quiet=quiet) as proof:
        tally = _generate_and_post(proof, examples, seed_value)
        return asyncio.run(_finish(proof, tally))


def _generate_and_post(proof: ProofStack, examples: int, seed_value: int) -> Tally:
    """HTTP inputs are posted as hypothesis draws them; Kafka ones are queued, sent in one go."""
    tally = Tally()
    headers = {"Authorization": f"Bearer {proof.api_key}", "Content-Type": "application/json"}
    client = httpx.Client(base_url=proof.url("booking"), headers=headers, timeout=30)

    @seed(seed_value)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(hostile_input())
    def one(item: tuple[str, bytes]) -> None:
        kind, value = item
        n = tally.http_tried + len(tally.kafka)
        if n % 2 == 0:
            _post(client, value, tally)
        else:
            tally.kafka.append(_envelope(kind, value, n))

    try:
        one()
    finally:
        client.close()
    return tally


def _post(client: httpx.Client, value: bytes, tally: Tally) -> None:
    tally.http_tried += 1
    try:
        answer = client.post("/v1/appointments", content=value)
    except httpx.TransportError:
        # The server may close a connection after refusing a huge body before reading it all;
        # the client then sees a reset. Counted, and asked again on a fresh connection: the
        # answer must still be clear.
        tally.http_resets += 1
        answer = client.post("/v1/appointments", content=value, headers={"Connection": "close"})
    tally.http_statuses[answer.status_code] += 1
    if answer.status_code == 202:
        tally.http_accepted.append(answer.json()["appointment_id"])
        return
    problem = _problem(answer)
    if answer.status_code not in CLEAR_STATUSES or problem is None:
        tally.http_unclear.append(f"{answer.status_code} {answer.text[:200]} for {value[:600]!r}")


def _problem(answer: httpx.Response) -> dict[str, Any] | None:
    """The answer as a problem+json that names what is wrong, else None."""
    if not answer.headers.get("content-type", "").startswith("application/problem+json"):
        return None
    body: dict[str, Any] = answer.json()
    if not (body.get("type") and body.get("title") and body.get("status") == answer.status_code):
        return None
    if answer.status_code == 422 and not all(e.get("field") for e in body.get("errors", [])):
        return None
    return body


def _envelope(kind: str, value: bytes, n: int) -> tuple[bytes, str | None]:
    request_id = f"hostile-{n}"
    if kind == "raw":
        # Every other unreadable message carries its request_id in a header only; the rest
        # carry none at all: those have no one to answer and must be dead-lettered.
        return value, request_id if n % 4 == 1 else None
    envelope = {
        "request_id": request_id,
        "calling_system": CALLER,
        "request_type": "BookAppointment",
        "payload": json.loads(value),
    }
    return json.dumps(envelope).encode(), request_id


async def _finish(proof: ProofStack, tally: Tally) -> Report:
    topics = Topics(proof.settings.topic_prefix)
    producer = AIOKafkaProducer(bootstrap_servers=proof.bootstrap, acks="all")
    await producer.start()
    try:
        for value, request_id in tally.kafka:
            headers = [("request_id", request_id.encode())] if request_id else []
            await producer.send(topics.booking_requests, value, key=b"hostile", headers=headers)
        await producer.flush()
    finally:
        await producer.stop()
    wanted = {request_id for _, request_id in tally.kafka if request_id}
    unanswerable = sum(1 for _, request_id in tally.kafka if request_id is None)
    replies = await _replies(proof, topics.booking_replies, wanted, deadline_s=120)
    accepted = {
        r["appointment_id"] for r in replies.values() if r["event_type"] == "BookingAccepted"
    }
    ours = set(tally.http_accepted) | accepted
    await _wait_settled(proof, ours, deadline_s=120 + len(ours))

    report = Report("inputs")
    rows = await observe.appointments(proof.owner_dsn)
    letters = [x for x in await observe.dead_letters(proof) if "booking.dlq" in x.id]
    mails = observe.mails(proof.var / "mail")
    bad_mails = [
        f"{m.path.name}: {problem}"
        for m in mails
        for problem in observe.header_problems(m) + _raw_markup(m)
    ]
    health = _health(proof)
    unclear_replies = [
        r for r in replies.values() if r["event_type"] == "BookingRejected" and not r.get("type")
    ]
    report.figures = {
        "inputs tried": tally.http_tried + len(tally.kafka),
        "HTTP inputs": tally.http_tried,
        "HTTP answers": dict(sorted(tally.http_statuses.items())),
        "HTTP connection resets (asked again)": tally.http_resets,
        "Kafka inputs": len(tally.kafka),
        "Kafka replies": dict(Counter(r["event_type"] for r in replies.values())),
        "accepted (HTTP + Kafka)": len(ours),
        "emails checked": len(mails),
    }
    report.zero("HTTP answers not a clear problem", len(tally.http_unclear))
    report.zero("Kafka requests without a reply", len(wanted - set(replies)))
    report.zero("rejections without a problem type", len(unclear_replies))
    report.zero("unanswerable requests not dead-lettered", max(0, unanswerable - len(letters)))
    report.zero("dead letters without a reason", sum(1 for x in letters if not x.reason))
    report.zero("partial or unexpected appointments", len(set(rows) ^ ours))
    report.zero(
        "accepted but not settled",
        sum(1 for a in ours if rows.get(a, {"status": ""})["status"] not in observe.TERMINAL),
    )
    report.zero("emails with raw markup or broken headers", len(bad_mails))
    report.zero("crashed or unready services", sum(1 for ok in health.values() if not ok))
    report.details = {
        "http_unclear": tally.http_unclear[:20],
        "bad_mails": bad_mails[:20],
        "health": health,
        "unanswered": sorted(wanted - set(replies))[:20],
    }
    return report


def _raw_markup(mail: observe.Mail) -> list[str]:
    html = mail.message.get_body(preferencelist=("html",))
    if html is None:
        return []
    content = html.get_content()
    return [f"raw {fragment!r} in HTML" for fragment in RAW_MARKUP if fragment in content]


async def _replies(
    proof: ProofStack, topic: str, wanted: set[str], deadline_s: float
) -> dict[str, dict[str, Any]]:
    """Replies to our request ids, read from the start of every partition until all came."""
    consumer = AIOKafkaConsumer(bootstrap_servers=proof.bootstrap, enable_auto_commit=False)
    await consumer.start()
    found: dict[str, dict[str, Any]] = {}
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        assigned = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        deadline = time.monotonic() + deadline_s
        while not wanted <= set(found) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    reply = json.loads(record.value)
                    if reply.get("request_id") in wanted:
                        found[reply["request_id"]] = reply
    finally:
        await consumer.stop()
    return found


async def _wait_settled(proof: ProofStack, ids: set[str], deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        rows = await observe.appointments(proof.owner_dsn)
        if all(a in rows and rows[a]["status"] in observe.TERMINAL for a in ids):
            return
        await asyncio.sleep(1)  # polling interval of a wait with a deadline


def _health(proof: ProofStack) -> dict[str, bool]:
    alive = proof.alive()
    with httpx.Client(timeout=5, trust_env=False) as client:
        for name in ("booking", "meetings", "notifications", "consent"):
            try:
                ready = client.get(f"{proof.url(name)}/health/ready").status_code == 200
            except httpx.HTTPError:
                ready = False
            alive[f"{name} ready"] = ready
    return alive
