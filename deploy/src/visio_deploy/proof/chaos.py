"""`visio-rdv proof chaos`: book N appointments on the real stack while everything that can
fail does — Graph answers 429/503/504/commit-then-504, the SMTP relay 451s and hangs up,
PostgreSQL connections are cut, services are SIGKILLed and restarted — then, once the system
settles, check that nothing was lost and nothing doubled, and that every person had their
email within the promise (`chaos_checks`).

The run either settles (every promise holds) or times out, and says which. What a seed
replays: the appointments booked (each from (seed, its number)), the Graph and SMTP faults
(each a function of (seed, appointment, operation, attempt), `visio_fakes.fault_draws`), and
the schedule of PostgreSQL cuts and SIGKILLs (the gaps, the victims). What it cannot: the
appointments' ids (booking draws them), and what a cut or a kill interrupts, which depends on
the timing of the run. A failed run keeps its evidence in the folder its report names.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from aiokafka import AIOKafkaProducer
from visio_shared import Topics

from visio_deploy.proof import bookings, chaos_checks, ledger_seal
from visio_deploy.proof.chaos_checks import Booked
from visio_deploy.proof.report import Report
from visio_deploy.proof.stack import SERVICES_TO_KILL, ProofStack, proof_stack


@dataclass(frozen=True)
class ChaosOptions:
    appointments: int = 200
    seed: int = 1
    kill_every_s: float = 15.0  # 0: no kills
    chaos_min_s: float = 20.0  # faults and kills last at least this long
    graph_fault_rate: float = 0.04  # each of 429, 503, 504, commit-then-504
    smtp_fail_share: float = 0.1
    smtp_drop_share: float = 0.05
    pg_cut_every_s: float = 3.0  # mean gap between two PostgreSQL cuts; 0: none
    # The promise: every person has their confirmation this long after booking, the sink's
    # faults on all along (docs/guarantees.md; VISIO_EMAIL_LATE_AFTER_MINUTES's default).
    email_within_s: float = 600.0
    # How long to wait for the system to settle once booking is done; None: the promise plus
    # two minutes (past that, someone booked last has waited longer than promised).
    settle_timeout_s: float | None = None
    evidence: Path | None = Path("var/proof")  # where a failed run keeps its folder
    # More environment per process, on top of the faults' (tests that break things on purpose).
    env: dict[str, dict[str, str]] = field(default_factory=dict)
    quiet: bool = False

    def replay(self) -> str:
        return (
            f"uv run visio-rdv proof chaos --appointments {self.appointments} --seed {self.seed}"
            f" --kill-every {self.kill_every_s:g} --fault-rate {self.graph_fault_rate:g}"
        )


def run_chaos(options: ChaosOptions) -> Report:
    env = {name: dict(values) for name, values in options.env.items()}
    env["smtp-sink"] = {
        "SMTP_SINK_TEMP_FAIL_SHARE": str(options.smtp_fail_share),
        "SMTP_SINK_DROP_SHARE": str(options.smtp_drop_share),
        "SMTP_SINK_FAULT_SEED": str(options.seed),
        **env.get("smtp-sink", {}),
    }
    # Checkpoints every few seconds: verify, checked while the run settles, requires one.
    env["consent"] = {"CONSENT_CHECKPOINT_INTERVAL_S": "5", **env.get("consent", {})}
    with proof_stack(
        seed=options.seed,
        env=env,
        quiet=options.quiet,
        name="chaos",
        evidence=options.evidence,
        replay=options.replay(),
    ) as proof:
        report = asyncio.run(_chaos(proof, options))
        if not report.passed:
            proof.keep(report)
        return report


async def _chaos(proof: ProofStack, options: ChaosOptions) -> Report:
    assert proof.proxy is not None, "the chaos run cuts PostgreSQL through the fault proxy"
    rate = options.graph_fault_rate
    proof.emulator(
        "POST",
        "/faults",
        {
            "throttle_rate": rate,
            "unavailable_rate": rate,
            "gateway_timeout_rate": rate,
            "commit_then_timeout_rate": rate,
            "retry_after_seconds": 1,
            "seed": options.seed,
        },
    )
    if options.pg_cut_every_s > 0:
        proof.proxy.mean_cut_interval_s = options.pg_cut_every_s
        proof.proxy.cutting = True

    started = time.monotonic()
    kills: Counter[str] = Counter()
    booking_done = asyncio.Event()
    killer = asyncio.create_task(_kill_randomly(proof, options, kills, booking_done))
    booked = await _book(proof, options)
    booking_done.set()
    await killer
    chaos_s = time.monotonic() - started

    # Graph and PostgreSQL behave again; the sink's faults stay on, as a relay's would.
    proof.proxy.cutting = False
    graph_faults = proof.emulator("GET", "/stats")["faults_injected"]  # a reconfigure resets it
    proof.emulator("POST", "/faults", {})
    deadline_s = options.settle_timeout_s or options.email_within_s + 120
    report, settled, settle_s = await _settle(proof, booked, options, deadline_s)
    # Everything the run caused, signed and verified against that signature.
    ledger_seal.sign_and_verify(proof, report)
    report.figures = {
        "appointments": options.appointments,
        "booked over HTTP": len(booked.http),
        "booked over Kafka": len(booked.kafka_sent) + len(booked.kafka_unsent),
        "faults: graph": graph_faults,
        "faults: smtp": chaos_checks.sink_faults(proof.stack.logs / "smtp-sink.log"),
        "faults: postgres cuts": proof.proxy.cuts,
        "kills (SIGKILL + restart)": dict(kills),
        "chaos seconds": round(chaos_s, 1),
        "outcome": (
            f"settled in {settle_s:.0f} s"
            if settled
            else f"timed out after {settle_s:.0f} s (limit {deadline_s:.0f} s)"
        ),
        **report.figures,
    }
    report.holds("settled before the deadline", settled)
    if not settled:
        await chaos_checks.explain_unsettled(proof, booked, report, options)
    report.notes.append(
        "Kafka broker restarts: out of scope on tansu (memory storage: a restart loses "
        "every topic); run against Apache Kafka (VISIO_KAFKA_BOOTSTRAP_SERVERS) to add them."
    )
    return report


async def _book(proof: ProofStack, options: ChaosOptions) -> Booked:
    """Half over HTTP, half over Kafka, interleaved, a few at a time as partners do. Each
    booking is drawn from (seed, its number), whatever the order they go in."""
    deadline = time.monotonic() + 120 + options.appointments * 0.5
    booked = Booked({}, {}, [], [])
    topic = Topics(proof.settings.topic_prefix).partner_requests(bookings.KAFKA_CALLER)
    producer = AIOKafkaProducer(bootstrap_servers=proof.bootstrap, acks="all")
    await producer.start()
    gate = asyncio.Semaphore(8)
    headers = {"Authorization": f"Bearer {proof.api_key}"}

    async def one(i: int, client: httpx.AsyncClient) -> None:
        body = bookings.booking_body(random.Random(f"{options.seed}:booking:{i}"))
        key = f"chaos-{options.seed}-{i}"
        async with gate:
            if i % 2 == 0:
                appointment, why = await bookings.book_over_http(client, body, key, deadline)
                booked.http[key] = appointment
                if appointment is None:
                    booked.http_refused[key] = why
                return
            value = bookings.kafka_request(body, key)
            sent = await bookings.send_over_kafka(producer, topic, value, key, deadline)
            (booked.kafka_sent if sent else booked.kafka_unsent).append(key)

    try:
        async with httpx.AsyncClient(
            base_url=proof.url("booking"), headers=headers, trust_env=False, timeout=10
        ) as client:
            await asyncio.gather(*(one(i, client) for i in range(options.appointments)))
    finally:
        await producer.stop()
    return booked


async def _kill_randomly(
    proof: ProofStack,
    options: ChaosOptions,
    kills: Counter[str],
    booking_done: asyncio.Event,
) -> None:
    """SIGKILL a service now and then: the gaps, the victims and the time down come from the
    seed alone (their own generator, which booking does not share)."""
    if options.kill_every_s <= 0:
        return
    schedule = random.Random(f"{options.seed}:kills")  # fault injection, not security
    end = time.monotonic() + options.chaos_min_s
    while not (booking_done.is_set() and time.monotonic() >= end and kills):
        await asyncio.sleep(options.kill_every_s * schedule.uniform(0.5, 1.5))
        name = schedule.choice(SERVICES_TO_KILL)
        proof.stack.kill(name)
        kills[name] += 1
        await asyncio.sleep(schedule.uniform(0, 2))  # down for a moment, as a crash-looping pod
        proof.stack.restart(name)


async def _settle(
    proof: ProofStack, booked: Booked, options: ChaosOptions, limit_s: float
) -> tuple[Report, bool, float]:
    """Check until every promise holds (settled) or the deadline passes (timed out); the last
    report, which of the two, and how long it took."""
    started = time.monotonic()
    while True:
        report = await chaos_checks.check(proof, booked, options.email_within_s)
        elapsed = time.monotonic() - started
        if chaos_checks.settled(report):
            return report, True, elapsed
        if elapsed > limit_s:
            return report, False, elapsed
        await asyncio.sleep(2)  # polling interval of a wait with a deadline
