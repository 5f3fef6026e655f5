"""The bench's phases, each on the same running stack so their figures compare: throughput (and
its cost), latency at a fixed offered load, backlog drain (at once, and each service catching
up alone), and scale-out."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from visio_runtime.settings import ServiceSettings
from visio_runtime.topic_reader import producer
from visio_shared import Topics

from visio_deploy.bench import load
from visio_deploy.bench.meters import Measured, PhaseMeter, Watched
from visio_deploy.bench.probes import Progress, ProgressProbe, percentile
from visio_deploy.proof.bookings import KAFKA_CALLER
from visio_deploy.proof.stack import ProofStack

# A confirmation the sink stored twice under one Message-ID: `<id>.r1.confirmation@domain.2.eml`
_SECOND_COPY = re.compile(r"\.confirmation@[^/]+\.\d+\.eml$")


@dataclass
class PhaseResult:
    name: str
    offered: int
    done: int
    seconds: float
    progress: Progress
    measured: Measured
    duplicates: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0


async def wait_done(
    probe: ProgressProbe, target: int, budget_s: float, started: float
) -> tuple[Progress, float]:
    """Poll until `target` appointments are fully done, or the budget ends. Returns the
    progress and the seconds from `started` to the last one done."""
    last = await probe.read()
    finished_at = time.perf_counter()
    deadline = started + budget_s
    while time.perf_counter() < deadline:
        progress = await probe.read()
        if progress.done != last.done:
            finished_at = time.perf_counter()
        last = progress
        if progress.done >= target:
            break
        await asyncio.sleep(0.5)  # polling the tables, with a deadline
    return last, finished_at - started


def duplicates(mail_dir: Path) -> int:
    return sum(1 for path in mail_dir.glob("*.eml") if _SECOND_COPY.search(path.name))


async def throughput(
    stack: ProofStack,
    watched: list[Watched],
    count: int,
    advisors: int,
    http_share: float,
    concurrency: int,
    budget_s: float,
    window: int,
    name: str = "throughput",
    seed: int = 1,
) -> PhaseResult:
    """Book `count` appointments as fast as the system takes them: a closed loop that keeps
    `window` appointments booked but not yet fully done, booking more (half over HTTP, half
    over the inbound topic) as others finish. Offering all of them at once only measures how
    long a queue takes to form: every service then works on every appointment a little, and
    the first ones finish last. Stops at `count` done or at the budget."""
    work = load.bodies(count, advisors, seed)
    topics = Topics(stack.settings.topic_prefix)
    settings = ServiceSettings(kafka_bootstrap_servers=stack.bootstrap)
    answered = load.HttpResult()
    offered = over_http = not_sent = 0
    async with (
        ProgressProbe(stack.owner_dsn, stack.var / "mail") as probe,
        producer(settings) as sender,
    ):
        probe.begin()
        async with PhaseMeter(watched, stack.owner_dsn, [probe.backend_pid]) as meter:
            started = time.perf_counter()
            deadline = started + budget_s
            progress = await probe.read()
            while progress.done < count and time.perf_counter() < deadline:
                wanted = min(count - offered, window - (offered - progress.done))
                if wanted > 0:
                    batch = work[offered : offered + wanted]
                    by_http = int(len(batch) * http_share)
                    sent, _ = await asyncio.gather(
                        load.send_requests(
                            sender, topics.partner_requests(KAFKA_CALLER), batch[by_http:]
                        ),
                        load.book_flat_out(stack.url("booking"), stack.api_key,
                                           batch[:by_http], concurrency, answered),
                    )  # fmt: skip
                    offered += len(batch)
                    over_http += by_http
                    not_sent += len(batch) - by_http - sent
                await asyncio.sleep(0.5)  # polling the tables, with a deadline
                progress = await probe.read()
            seconds = time.perf_counter() - started
    assert meter.measured is not None
    return PhaseResult(
        name=name,
        offered=count,
        done=progress.done,
        seconds=seconds,
        progress=progress,
        measured=meter.measured,
        duplicates=duplicates(stack.var / "mail"),
        refused=answered.refused | ({"kafka_not_sent": not_sent} if not_sent else {}),
        extra={
            "booked": offered,
            "over_http": over_http,
            "over_kafka": offered - over_http,
            "window": window,
            "booking_api_p50_ms": _ms(percentile(answered.latencies_s, 0.5)),
            "booking_api_p99_ms": _ms(percentile(answered.latencies_s, 0.99)),
        },
    )


async def latency(
    stack: ProofStack,
    watched: list[Watched],
    rate: float,
    seconds: float,
    graph_latency_ms: int,
    advisors: int,
    budget_s: float,
) -> PhaseResult:
    """An open-loop load at `rate`/s over HTTP with the Graph emulator adding
    `graph_latency_ms` to each call: the booking API's answer time, and accepted → email in the
    sink (the sink's file time, against the moment the 202 arrived)."""
    count = int(rate * seconds)
    work = load.bodies(count, advisors, seed=2)
    stack.emulator("POST", "/faults", {"latency_ms": graph_latency_ms})
    try:
        async with ProgressProbe(stack.owner_dsn, stack.var / "mail") as probe:
            probe.begin()
            async with PhaseMeter(watched, stack.owner_dsn, [probe.backend_pid]) as meter:
                started = time.perf_counter()
                answered = await load.book_at_rate(stack.url("booking"), stack.api_key, work, rate)
                progress, took = await wait_done(probe, count, budget_s, started)
    finally:
        stack.emulator("POST", "/faults", {"latency_ms": 0})
    assert meter.measured is not None
    to_email = _accepted_to_email(stack.var / "mail", answered.accepted_at)
    return PhaseResult(
        name="latency",
        offered=count,
        done=progress.done,
        seconds=took,
        progress=progress,
        measured=meter.measured,
        refused=answered.refused,
        extra={
            "offered_rate": rate,
            "graph_latency_ms": graph_latency_ms,
            "booking_api_p50_ms": _ms(percentile(answered.latencies_s, 0.5)),
            "booking_api_p99_ms": _ms(percentile(answered.latencies_s, 0.99)),
            "accepted_to_email_p50_ms": _ms(percentile(to_email, 0.5)),
            "accepted_to_email_p99_ms": _ms(percentile(to_email, 0.99)),
            "emails_timed": len(to_email),
        },
    )


def _accepted_to_email(mail_dir: Path, accepted_at: dict[str, float]) -> list[float]:
    delays = []
    for appointment_id, accepted in accepted_at.items():
        for path in mail_dir.glob(f"{appointment_id}.r1.confirmation@*.eml"):
            delays.append(path.stat().st_mtime - accepted)
            break
    return delays


async def _queued_for_stopped(
    stack: ProofStack, consumers: Sequence[str], count: int, advisors: int, seed: int
) -> list[str]:
    """Stop these services, then write `count` AppointmentRequested on the topic (booking
    bypassed); returns their appointment ids."""
    for name in consumers:
        stack.stack.stop_one(name)
    topics = Topics(stack.settings.topic_prefix)
    settings = ServiceSettings(kafka_bootstrap_servers=stack.bootstrap)
    work = load.bodies(count, advisors, seed=seed)
    async with producer(settings) as sender:
        return await load.preload(sender, topics.appointments, work)


async def backlog(
    stack: ProofStack,
    watched_of: Any,
    count: int,
    advisors: int,
    budget_s: float,
) -> PhaseResult:
    """`count` AppointmentRequested already on the topic when meetings, notifications and
    consent start: how fast each drains it (from its first event done to its last seen, so
    the group joins at start are not counted as drain time), and how much memory each takes."""
    consumers = ("meetings", "notifications", "consent")
    loaded = await _queued_for_stopped(stack, consumers, count, advisors, seed=3)
    samples: list[tuple[float, Progress]] = []
    async with ProgressProbe(stack.owner_dsn, stack.var / "mail", expected=loaded) as probe:
        probe.begin()
        for name in consumers:
            stack.stack.restart(name)
        async with PhaseMeter(watched_of(), stack.owner_dsn, [probe.backend_pid]) as meter:
            started = time.perf_counter()
            while time.perf_counter() < started + budget_s:
                # Totals only while it drains: checking 50,000 appointments one by one twice a
                # second would load the machine it measures. Each is checked at the end.
                progress = await probe.read(per_appointment=False)
                samples.append((time.perf_counter() - started, progress))
                if min(progress.meetings, progress.emails, progress.consent) >= len(loaded):
                    break
                await asyncio.sleep(0.5)  # polling the tables, with a deadline
        last = await probe.read()
    assert meter.measured is not None
    rates = {
        service: _drain_rate([(t, getattr(p, service)) for t, p in samples])
        for service in ("meetings", "emails", "consent")
    }
    return PhaseResult(
        name="backlog",
        offered=len(loaded),
        done=last.done,
        seconds=samples[-1][0],
        progress=last,
        measured=meter.measured,
        duplicates=duplicates(stack.var / "mail"),
        extra={
            "meetings_per_s": rates["meetings"],
            "notifications_per_s": rates["emails"],
            "consent_per_s": rates["consent"],
            "drain_per_s": min(rates.values()),
        },
    )


async def catch_up(
    stack: ProofStack, watched_of: Callable[[], list[Watched]], count: int, advisors: int,
    budget_s: float,
) -> PhaseResult:  # fmt: skip
    """Each of meetings, notifications and consent down while `count` appointments' events
    waited for it, then started alone, the rest of the system up to date — the way a service
    catches up after an outage or a deployment: how fast each drains its own backlog when it
    does not share the machine with the other two draining theirs (`backlog` measures them
    at once, where the downstream notifications can go no faster than the whole chain).

    In order: meetings (its AppointmentRequested), then notifications (the requests and the
    MeetingReady meetings left), then consent (the requests); each gets `budget_s`. Each drain
    is metered on its own: the service's CPU-ms per event and its peak memory go with its rate;
    the phase's CPU table is notifications' drain (the one no other phase isolates)."""
    consumers = {"meetings": "meetings", "notifications": "emails", "consent": "consent"}
    loaded = await _queued_for_stopped(stack, list(consumers), count, advisors, seed=5)
    extra: dict[str, float] = {}
    notifications_drain: Measured | None = None  # the phase's CPU table
    async with ProgressProbe(stack.owner_dsn, stack.var / "mail", expected=loaded) as probe:
        probe.begin()
        started = time.perf_counter()
        progress = await probe.read(per_appointment=False)
        for name, counter in consumers.items():
            # Notifications can mail only the appointments whose meeting is ready.
            waiting = progress.meetings if name == "notifications" else len(loaded)
            stack.stack.restart(name)
            async with PhaseMeter(watched_of(), stack.owner_dsn, [probe.backend_pid]) as meter:
                samples = await _drain(probe, counter, waiting, budget_s)
            assert meter.measured is not None
            if name == "notifications":
                notifications_drain = meter.measured
            progress = await probe.read(per_appointment=False)
            drained = getattr(progress, counter)
            extra[f"{name}_per_s"] = _drain_rate(samples)
            extra[f"{name}_cpu_ms_per_event"] = (
                round(1000 * meter.measured.cpu_s.get(name, 0.0) / drained, 2) if drained else 0.0
            )
            extra[f"{name}_rss_peak_mb"] = round(meter.measured.rss_peak.get(name, 0) / 2**20, 1)
        seconds = time.perf_counter() - started
        last = await probe.read()
    assert notifications_drain is not None
    return PhaseResult(
        name="catch-up",
        offered=len(loaded),
        done=last.done,
        seconds=round(seconds, 2),
        progress=last,
        measured=notifications_drain,
        duplicates=duplicates(stack.var / "mail"),
        extra=extra,
    )


async def _drain(
    probe: ProgressProbe, counter: str, waiting: int, budget_s: float
) -> list[tuple[float, int]]:
    """Samples (seconds, count) of one service's progress until it did all `waiting`, or the
    budget ended (totals only, twice a second)."""
    samples: list[tuple[float, int]] = []
    started = time.perf_counter()
    while time.perf_counter() < started + budget_s:
        progress = await probe.read(per_appointment=False)
        samples.append((time.perf_counter() - started, getattr(progress, counter)))
        if samples[-1][1] >= waiting:
            break
        await asyncio.sleep(0.5)  # polling the tables, with a deadline
    return samples


def _drain_rate(counts: list[tuple[float, int]]) -> float:
    """Events per second from the last sample that saw none done (the service was still
    joining its group) to the first that saw the most done."""
    if not counts or counts[-1][1] == 0:
        return 0.0
    before = [t for t, n in counts if n == 0]
    start = before[-1] if before else 0.0
    last_t, last_n = min(
        ((t, n) for t, n in counts if n == counts[-1][1]), key=lambda sample: sample[0]
    )
    return round(last_n / (last_t - start), 1) if last_t > start else 0.0


def consumer_partitions(url: str) -> int | None:
    try:
        answer = httpx.get(f"{url}/health/ready", timeout=5, trust_env=False)
        return int(answer.json()["consumer"].get("partitions", 0))
    except (httpx.HTTPError, ValueError, KeyError):
        return None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)
