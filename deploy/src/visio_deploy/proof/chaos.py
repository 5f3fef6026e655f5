"""`visio-rdv proof chaos`: book N appointments on the real stack and play a story with each
(`story`: reschedules, cancellations, recordings withdrawn, links asked again, reminders falling
due, meetings Graph refuses on purpose) while everything that can fail does — Graph answers
429/503/504/commit-then-504, the SMTP relay 451s and hangs up, PostgreSQL and broker connections
are cut, every service is SIGKILLed and restarted — then, once the system settles, judge each
appointment against what the run did to it (`verdict`), check that every planned fault class
fired (`fired`), and that every person had their email within the promise (`chaos_checks`).

The run either settles (every promise holds) or times out, and says which. What a seed
replays: the appointments booked (each from (seed, its number)), the Graph and SMTP faults
(each a function of (seed, appointment, operation, attempt), `visio_fakes.fault_draws`), and
the schedule of PostgreSQL cuts and SIGKILLs (the gaps, the victims). What it cannot: the
appointments' ids (booking draws them), and what a cut or a kill interrupts, which depends on
the timing of the run. A failed run keeps its evidence in the folder its report names.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaProducer
from visio_shared import Topics

from visio_deploy.proof import (
    bookings,
    chaos_checks,
    fired,
    ledger_seal,
    observe,
    partners,
    story,
)
from visio_deploy.proof.partners import ReplyReader
from visio_deploy.proof.report import Report
from visio_deploy.proof.stack import SERVICES_TO_KILL, ProofStack, proof_stack
from visio_deploy.proof.story import Story


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
    broker_cut_every_s: float = 10.0  # mean gap between two broker connection cuts; 0: none
    # The promise: every person has their confirmation this long after booking, the sink's
    # faults on all along (docs/guarantees.md; VISIO_EMAIL_LATE_AFTER_MINUTES's default).
    email_within_s: float = 600.0
    # How long to wait for the system to settle once the story is played; None: the promise
    # plus two minutes (past that, someone booked last has waited longer than promised).
    settle_timeout_s: float | None = None
    # The story: changes after the bookings (`story.ROLES`); meetings refused on purpose.
    story: bool = True
    permanent_faults: bool = True
    # Notifications' reminder leads; the `reminder` appointments start so that the shortest
    # falls due this long after they are booked.
    reminder_offsets_minutes: tuple[int, ...] = (48 * 60, 60)
    reminder_due_s: float = 150.0
    # How long one step of a story waits for the email of the step before; None: the promise.
    step_timeout_s: float | None = None
    reply_within_s: float = 60.0  # a partner's wait for its reply before it looks elsewhere
    # A planned fault class whose injection is left off, as a broken injector would (tests).
    broken_fault: str | None = None
    evidence: Path | None = Path("var/proof")  # where a failed run keeps its folder
    # More environment per process, on top of the faults' (tests that break things on purpose).
    env: dict[str, dict[str, str]] = field(default_factory=dict)
    quiet: bool = False

    @property
    def step_s(self) -> float:
        return self.step_timeout_s or self.email_within_s

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
        # Each planned SMTP fault class fires at least once, on the run's first emails, whatever
        # the draws of a short run (24 appointments: no hang-up in about one run in ten).
        "SMTP_SINK_FIRST_FAULTS": json.dumps(
            [
                fault
                for share, fault in (
                    (options.smtp_drop_share, "drop"),
                    (options.smtp_fail_share, "451"),
                )
                if share > 0
            ]
        ),
        **env.get("smtp-sink", {}),
    }
    # Checkpoints every few seconds: verify, checked while the run settles, requires one.
    env["consent"] = {"CONSENT_CHECKPOINT_INTERVAL_S": "5", **env.get("consent", {})}
    env["notifications"] = {
        "NOTIFICATIONS_REMINDER_OFFSETS_MINUTES": json.dumps(
            list(options.reminder_offsets_minutes)
        ),
        **env.get("notifications", {}),
    }
    with proof_stack(
        seed=options.seed,
        env=env,
        quiet=options.quiet,
        name="chaos",
        evidence=options.evidence,
        replay=options.replay(),
        broker_faults=options.broker_cut_every_s > 0,
    ) as proof:
        report = asyncio.run(_chaos(proof, options))
        if not report.passed:
            proof.keep(report)
        return report


def _graph_faults(options: ChaosOptions) -> dict[str, Any]:
    rate = options.graph_fault_rate
    rates = {
        "throttle_rate": ("429", rate),
        "unavailable_rate": ("503", rate),
        "gateway_timeout_rate": ("504", rate),
        "commit_then_timeout_rate": ("commit-then-504", rate),
    }
    broken = {kind for kind, name in fired.GRAPH.items() if name == options.broken_fault}
    config: dict[str, Any] = {
        setting: 0.0 if kind in broken else value for setting, (kind, value) in rates.items()
    }
    return config | {"retry_after_seconds": 1, "seed": options.seed}


async def _chaos(proof: ProofStack, options: ChaosOptions) -> Report:
    assert proof.proxy is not None, "the chaos run cuts PostgreSQL through the fault proxy"
    proof.emulator("POST", "/faults", _graph_faults(options))
    if options.permanent_faults:
        # Every advisor's calendar but one: Graph refuses that one for good.
        allowed = [story.advisor_of(options, n) for n in range(options.appointments)]
        proof.emulator("POST", "/access-policy", {"allowed_user_ids": allowed})
    cutters = [
        (proof.proxy, options.pg_cut_every_s, fired.POSTGRES),
        (proof.broker_proxy, options.broker_cut_every_s, fired.BROKER),
    ]
    for cutter, every_s, name in cutters:
        if cutter is not None and every_s > 0 and options.broken_fault != name:
            cutter.mean_cut_interval_s = every_s
            cutter.cutting = True

    started = time.monotonic()
    kills: Counter[str] = Counter()
    topics = Topics(proof.settings.topic_prefix)
    reply_topic = partners.reply_topic(topics, bookings.KAFKA_CALLER)
    async with ReplyReader(proof.bootstrap, reply_topic, bookings.KAFKA_CALLER) as replies:
        played = asyncio.Event()
        killer = asyncio.create_task(_kill_in_turn(proof, options, kills, played))
        stories = await _play(proof, options, replies)
        played.set()
        await killer
        chaos_s = time.monotonic() - started

        # Graph, PostgreSQL and the broker behave again; the sink's faults stay on, as a
        # relay's would.
        for cutter, _, _ in cutters:
            if cutter is not None:
                cutter.cutting = False
        graph_faults = proof.emulator("GET", "/stats")["faults_injected"]  # reset by /faults
        proof.emulator("POST", "/faults", {})
        deadline_s = options.settle_timeout_s or options.email_within_s + 120
        report, settled, settle_s = await _settle(proof, stories, replies, options, deadline_s)
    smtp = chaos_checks.sink_faults(proof.stack.logs / "smtp-sink.log")
    # Everything the run caused, signed and verified against that signature.
    ledger_seal.sign_and_verify(proof, report)
    report.figures = {
        "appointments": options.appointments,
        "booked over HTTP": sum(s.plan.channel == "http" for s in stories),
        "booked over Kafka": sum(s.plan.channel == "kafka" for s in stories),
        "faults: graph": graph_faults,
        "faults: smtp": smtp,
        "faults: postgres cuts": proof.proxy.cuts,
        "faults: broker connection cuts": proof.broker_proxy.cuts if proof.broker_proxy else 0,
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
    fired.judge(
        report,
        options,
        graph_faults,
        smtp,
        proof.proxy.cuts,
        proof.broker_proxy.cuts if proof.broker_proxy else 0,
        dict(kills),
    )
    if not settled:
        await chaos_checks.explain_unsettled(proof, stories, report, options)
    report.notes.append(
        "Kafka broker restarts: out of scope on tansu (memory storage: a restart loses "
        "every topic); run against Apache Kafka (VISIO_KAFKA_BOOTSTRAP_SERVERS) to add them."
    )
    return report


async def _play(proof: ProofStack, options: ChaosOptions, replies: ReplyReader) -> list[Story]:
    """Every appointment's story at once, bookings a few at a time as partners send them,
    half over HTTP and half over Kafka. Each is drawn from (seed, its number)."""
    now = datetime.now(UTC)
    stories = [Story(story.plan(options, i, now)) for i in range(options.appointments)]
    topics = Topics(proof.settings.topic_prefix)
    producer = AIOKafkaProducer(bootstrap_servers=proof.bootstrap, acks="all")
    await producer.start()
    consent_key = await observe.consent_key(proof.owner_dsn, "proof-chaos", ["consent:withdraw"])
    pool = await asyncpg.create_pool(proof.owner_dsn, min_size=1, max_size=4)
    assert pool is not None
    try:
        async with (
            _client(proof.url("booking"), proof.api_key) as http,
            _client(proof.url("consent"), consent_key) as consent,
        ):
            actor = story.Actor(
                options=options,
                http=http,
                consent=consent,
                producer=producer,
                request_topic=partners.request_topic(topics, bookings.KAFKA_CALLER),
                replies=replies,
                mail_dir=proof.var / "mail",
                pool=pool,
                gate=asyncio.Semaphore(8),
                deadline=time.monotonic() + 120 + options.appointments * 0.5 + options.step_s * 4,
            )
            await asyncio.gather(*(actor.tell(one) for one in stories))
    finally:
        await producer.stop()
        await pool.close()
    return stories


def _client(base_url: str, key: str) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.AsyncClient(base_url=base_url, headers=headers, trust_env=False, timeout=10)


async def _kill_in_turn(
    proof: ProofStack,
    options: ChaosOptions,
    kills: Counter[str],
    played: asyncio.Event,
) -> None:
    """SIGKILL a service now and then, each in turn (in an order drawn anew for every round),
    until the story is played, the chaos lasted its minimum and every service was killed: the
    gaps, the victims and the time down come from the seed alone (their own generator)."""
    if options.kill_every_s <= 0:
        return
    schedule = random.Random(f"{options.seed}:kills")  # fault injection, not security
    end = time.monotonic() + options.chaos_min_s
    turn: list[str] = []
    broken = {s for s in SERVICES_TO_KILL if fired.kill_class(s) == options.broken_fault}
    while not (
        played.is_set()
        and time.monotonic() >= end
        and all(kills[s] for s in SERVICES_TO_KILL if s not in broken)
    ):
        await asyncio.sleep(options.kill_every_s * schedule.uniform(0.5, 1.5))
        if not turn:
            turn = schedule.sample(SERVICES_TO_KILL, len(SERVICES_TO_KILL))
        name = turn.pop()
        if name in broken:
            continue
        proof.stack.kill(name)
        kills[name] += 1
        await asyncio.sleep(schedule.uniform(0, 2))  # down for a moment, as a crash-looping pod
        proof.stack.restart(name)


async def _settle(
    proof: ProofStack,
    stories: list[Story],
    replies: ReplyReader,
    options: ChaosOptions,
    limit_s: float,
) -> tuple[Report, bool, float]:
    """Check until every promise holds (settled) or the deadline passes (timed out); the last
    report, which of the two, and how long it took."""
    started = time.monotonic()
    while True:
        report = await chaos_checks.check(proof, stories, replies, options)
        elapsed = time.monotonic() - started
        if chaos_checks.settled(report):
            return report, True, elapsed
        if elapsed > limit_s:
            return report, False, elapsed
        await asyncio.sleep(2)  # polling interval of a wait with a deadline
