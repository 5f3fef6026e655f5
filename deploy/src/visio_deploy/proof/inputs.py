"""`visio-rdv proof inputs`: hostile input everywhere the system takes any. Hypothesis-generated
bookings to the HTTP API and to the partner caf-portal's own request topic; bodies no request
could be (nested thousands deep, a key given twice, a byte-order mark, invalid UTF-8, too
large, streamed) to every endpoint of booking's and consent's APIs and to the self-service
forms; and records no producer of ours writes (the same, plus no headers, null values and keys,
event types that are no type's name) on every topic a service reads.

It must all end in a clear answer, and the system must be as it was: every HTTP answer a
problem+json 4xx (a 4xx page for a form), every request on Kafka answered or — naming none —
dead-lettered, every record a service cannot read dead-lettered by each group that reads it
(matched one by one to the input, across every service's dead-letter topic), every partition's
lag back at zero, the services up, no partial appointment stored, and every email sent with
escaped text and intact headers."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx
from hypothesis import HealthCheck, given, seed, settings
from visio_runtime.settings import ServiceSettings
from visio_shared import Topics

from visio_deploy.ops.topology import subscriptions
from visio_deploy.proof import observe, records
from visio_deploy.proof.bodies import CLEAR_STATUSES, Answered, post_forms, post_to_apis, problem
from visio_deploy.proof.bookings import booking_body
from visio_deploy.proof.hostile import RAW_MARKUP, hostile_input
from visio_deploy.proof.records import CALLER, Hostile
from visio_deploy.proof.report import Report
from visio_deploy.proof.stack import ProofStack, proof_stack
from visio_deploy.stack import LOCAL_PARTNERS


@dataclass
class Tally:
    http_tried: int = 0
    http_accepted: list[str] = field(default_factory=list)
    http_statuses: Counter[int] = field(default_factory=Counter)
    http_unclear: list[str] = field(default_factory=list)
    http_resets: int = 0
    kafka: list[Hostile] = field(default_factory=list)
    battery: Answered = field(default_factory=Answered)
    forms: Answered = field(default_factory=Answered)


def run_inputs(
    examples: int, seed_value: int = 1, quiet: bool = False, proof: ProofStack | None = None
) -> Report:
    """On a stack of its own, or on `proof` — fresh: it counts every appointment stored (the
    suite runs it first on the stack it shares with `proof access`)."""
    if proof is not None:
        return _inputs(proof, examples, seed_value)
    with proof_stack(seed=seed_value, quiet=quiet, name="inputs") as fresh:
        return _inputs(fresh, examples, seed_value)


def _inputs(proof: ProofStack, examples: int, seed_value: int) -> Report:
    tally = _generate_and_post(proof, examples, seed_value)
    _post_battery(proof, tally, seed_value)
    return asyncio.run(_finish(proof, tally))


def _generate_and_post(proof: ProofStack, examples: int, seed_value: int) -> Tally:
    """HTTP inputs are posted as hypothesis draws them; Kafka ones are queued, sent in one go."""
    tally = Tally()
    topic = Topics(proof.settings.topic_prefix).partner_requests(CALLER)
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
            tally.kafka.append(_generated(topic, kind, value, n))

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
    if answer.status_code not in CLEAR_STATUSES or problem(answer) is None:
        tally.http_unclear.append(f"{answer.status_code} {answer.text[:200]} for {value[:600]!r}")


def _generated(topic: str, kind: str, value: bytes, n: int) -> Hostile:
    request_id = f"generated-{n}"
    if kind == "raw":
        # Every other unreadable message carries its request_id in a header only; the rest
        # carry none at all: those have no one to answer and must be dead-lettered.
        if n % 4 == 1:
            header = [("request_id", request_id.encode())]
            return Hostile("generated", topic, b"hostile", value, header, None, request_id)
        return Hostile("generated", topic, b"hostile", value, [])
    envelope = {
        "request_id": request_id,
        "calling_system": CALLER,
        "request_type": "BookAppointment",
        "payload": json.loads(value),
    }
    return Hostile(
        "generated", topic, b"hostile", json.dumps(envelope).encode(), [], None, request_id
    )


def _post_battery(proof: ProofStack, tally: Tally, seed_value: int) -> None:
    consent_key = asyncio.run(
        observe.consent_key(proof.owner_dsn, "proof-hostile", ["consent:read"])
    )
    rng = random.Random(seed_value)
    with (
        _client(proof, "booking", proof.api_key) as booking,
        _client(proof, "consent", consent_key) as consent,
    ):
        booked = booking.post("/v1/appointments", json=booking_body(rng))
        booked.raise_for_status()
        appointment_id = booked.json()["appointment_id"]
        tally.http_accepted.append(appointment_id)
        post_to_apis(booking, consent, rng, tally.battery, uuid.UUID(appointment_id))
    with _client(proof, "booking") as booking, _client(proof, "consent") as consent:
        post_forms(booking, consent, tally.forms)


def _client(proof: ProofStack, service: str, key: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=proof.url(service), headers=headers, timeout=30, trust_env=False)


async def _finish(proof: ProofStack, tally: Tally) -> Report:
    kafka = ServiceSettings(
        kafka_bootstrap_servers=proof.bootstrap, topic_prefix=proof.settings.topic_prefix
    )
    readers = subscriptions(kafka.topic_prefix, LOCAL_PARTNERS)
    read = [topic for reader in readers for topic in reader.topics]
    battery = records.battery(Topics(kafka.topic_prefix), read, tag=uuid.uuid4().hex[:8])
    sent = await records.send(kafka, tally.kafka + battery)
    wanted = {record.request_id for record in tally.kafka if record.request_id}
    replies = await records.replies(kafka, wanted, within_s=120)
    accepted = {
        r["appointment_id"] for r in replies.values() if r["event_type"] == "BookingAccepted"
    }
    ours = set(tally.http_accepted) | accepted
    await _wait_settled(proof, ours, deadline_s=120 + len(ours))
    found = await records.check(kafka, sent, readers, within_s=120)

    report = Report("inputs")
    rows = await observe.appointments(proof.owner_dsn)
    mails = observe.mails(proof.var / "mail")
    bad_mails = [
        f"{m.path.name}: {problem}"
        for m in mails
        for problem in observe.header_problems(m) + _raw_markup(m)
    ]
    health = _health(proof)
    unclear_replies = [
        r
        for r in found.replies.values()
        if r["event_type"] == "BookingRejected" and not (r.get("type") and r.get("status"))
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
        "hostile bodies to the APIs, answers": dict(sorted(tally.battery.statuses.items())),
        "hostile forms, answers": dict(sorted(tally.forms.statuses.items())),
        "hostile records, by topic": dict(sorted(Counter(r.topic for r in battery).items())),
        "dead letters read (every service's topic)": found.letters,
    }
    report.zero("HTTP answers not a clear problem", len(tally.http_unclear))
    report.zero("hostile bodies not answered with a problem+json 4xx", len(tally.battery.unclear))
    report.zero("hostile forms not answered with a 4xx page", len(tally.forms.unclear))
    found.judge(report)
    report.zero("rejections without a problem type", len(unclear_replies))
    report.zero("partial or unexpected appointments", len(set(rows) ^ ours))
    report.zero(
        "accepted but not settled",
        sum(1 for a in ours if rows.get(a, {"status": ""})["status"] not in observe.TERMINAL),
    )
    report.zero("emails with raw markup or broken headers", len(bad_mails))
    report.zero("crashed or unready services", sum(1 for ok in health.values() if not ok))
    report.details = {
        "http_unclear": tally.http_unclear[:20],
        "hostile_bodies_unclear": tally.battery.unclear[:20],
        "hostile_forms_unclear": tally.forms.unclear[:20],
        "lagging": [str(row) for row in found.lagging[:20]],
        "missing_letters": [str(letter) for letter in found.missing_letters[:20]],
        "unmatched_letters": found.unmatched_letters[:20],
        "unanswered": found.unanswered[:20],
        "bad_mails": bad_mails[:20],
        "health": health,
    }
    return report


def _raw_markup(mail: observe.Mail) -> list[str]:
    html = mail.message.get_body(preferencelist=("html",))
    if html is None:
        return []
    content = html.get_content()
    return [f"raw {fragment!r} in HTML" for fragment in RAW_MARKUP if fragment in content]


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
