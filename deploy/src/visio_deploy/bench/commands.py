"""`visio-rdv bench`: start the real local stack (tansu, PostgreSQL, the Graph emulator, the
SMTP sink, the four services and alerts), then measure, in one run so the figures compare: the
broker's own limit, throughput and its CPU cost, latency at a fixed load, backlog drain, and
scale-out. The headline is the CPU per appointment of our own processes, broker and database,
apart from the fakes' and the load generator's.

Each phase has a time budget: a system slower than the figures asked for still finishes the
bench, and the report says how much was done in the budget.

`--compare before.json after.json` prints two saved runs side by side instead (see
docs/performance.md)."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from visio_fakes.processes import free_port
from visio_runtime.local_stack import database_label, default_var_dir
from visio_runtime.settings import ServiceSettings

from visio_deploy.bench import baseline as base
from visio_deploy.bench import phases as ph
from visio_deploy.bench import profile, provenance, report
from visio_deploy.bench.compare import compare
from visio_deploy.bench.meters import Watched, stack_processes
from visio_deploy.proof.stack import ProofStack, database_server, proof_stack
from visio_deploy.stack import SERVICES
from visio_deploy.up import say

_PARTITIONS = ServiceSettings().topic_partitions


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure throughput, CPU cost, latency, backlog drain and scale-out",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _load_arguments(parser)
    _phase_arguments(parser)
    _output_arguments(parser)
    parser.set_defaults(handler=run)  # fmt: skip


def _load_arguments(parser: argparse.ArgumentParser) -> None:
    """How much is booked, how, and the broker-only baseline."""
    parser.add_argument(
        "--appointments", type=int, default=20_000, help="throughput: appointments booked"
    )
    parser.add_argument(
        "--advisors", type=int, default=200, help="advisors the appointments are spread over"
    )
    parser.add_argument(
        "--http-share",
        type=float,
        default=0.5,
        help="share booked over HTTP; the rest as national-scheduler on its own topic",
    )
    parser.add_argument(
        "--http-concurrency", type=int, default=16, help="HTTP bookings in flight at once"
    )
    parser.add_argument(
        "--window",
        type=int,
        # In flight at once: done/s is at most window / (seconds from booking to done). 200 at
        # about 2 s capped the rate at 100/s with a fifth of the 2-core machine idle; 400 keeps
        # it busy (docs/performance.md, 2026-12-07).
        default=400,
        help="throughput: appointments booked but not yet done, at most",
    )
    parser.add_argument(
        "--baseline-messages",
        type=int,
        default=50_000,
        help="messages of the broker-only baseline (what Kafka alone does here)",
    )


def _phase_arguments(parser: argparse.ArgumentParser) -> None:
    """Each phase's sizes and budget, and which phases run."""
    parser.add_argument(
        "--latency-rate", type=float, default=50.0, help="latency: bookings per second"
    )
    parser.add_argument(
        "--latency-seconds", type=float, default=30.0, help="latency: how long it books"
    )
    parser.add_argument(
        "--graph-latency-ms",
        type=int,
        default=100,
        help="latency the Graph emulator adds to each call, as the real Graph has",
    )
    parser.add_argument(
        "--backlog", type=int, default=50_000, help="backlog: appointments queued before the drain"
    )
    parser.add_argument(
        "--catch-up",
        type=int,
        default=20_000,
        help="catch-up: appointments each service finds waiting when it starts alone",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=2,
        help="copies of meetings and notifications in the scale-out phase",
    )
    parser.add_argument(
        "--phase-budget-s",
        type=float,
        default=100.0,
        help="the most any phase waits for its appointments to be done",
    )
    parser.add_argument(
        "--only",
        nargs="*",
        default=None,
        choices=["throughput", "latency", "backlog", "catch-up", "scale-out"],
        help="run these phases only (default: all)",
    )


def _output_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the figures and logs go; the smoke run; comparing two runs."""
    parser.add_argument(
        "--json",
        type=Path,
        default=default_var_dir() / "bench" / "bench.json",
        help="where the figures go (default: var/bench/bench.json of this checkout)",
    )
    parser.add_argument(
        "--logs", type=Path, default=None, help="keep each phase's service logs under this folder"
    )
    parser.add_argument(
        "--scratch",
        type=Path,
        default=None,
        metavar="DIR",
        help="where each phase's stack keeps its var/ (logs, the SMTP sink's mailbox); default: "
        f"{MEMORY_FOLDER} where there is one (see `scratch_folder`), else the system's "
        "temporary folder",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes: checks the command works (CI), measures nothing",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="sample each service with py-spy during each phase; raw stacks under DIR/<phase>/, "
        "a summary printed (its figures then carry py-spy's cost: compare runs made without)",
    )
    parser.add_argument(
        "--profile-seconds",
        type=float,
        default=30.0,
        help="how long each phase is profiled, from 10 s after its start",
    )
    parser.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("BEFORE", "AFTER"),
        help="print two saved runs (their --json files) side by side, and run nothing",
    )


# A folder in memory (tmpfs) on Linux; each phase gets its own private one inside (mkdtemp).
MEMORY_FOLDER = Path("/dev/shm")  # noqa: S108 (mkdtemp makes a private folder in it)


def scratch_folder() -> Path | None:
    """Where the phases' stacks go by default: in memory where the machine has such a folder.
    The SMTP sink writes a file per email, and on the 2-core VMs of docs/performance.md
    creating a file on their ext4 disk cost 0.25-0.75 ms of system CPU (15-25 µs in /dev/shm):
    the sink, a fake, spent 0.9 CPU-ms per email, more than composing it, taken from the
    services the bench measures. None: the system's temporary folder."""
    if MEMORY_FOLDER.is_dir() and os.access(MEMORY_FOLDER, os.W_OK | os.X_OK):
        return MEMORY_FOLDER
    return None


def run(args: argparse.Namespace) -> int:
    if args.compare:
        return _compare(*args.compare)
    if args.smoke:
        args.appointments, args.advisors, args.baseline_messages = 40, 5, 500
        args.latency_rate, args.latency_seconds, args.backlog = 10.0, 2.0, 30
        args.catch_up = 20
        args.phase_budget_s = 90.0
    started, began = time.monotonic(), datetime.now(UTC)
    load_average = list(os.getloadavg())
    args.scratch = args.scratch or scratch_folder()  # in the run's settings, as chosen
    only = args.only or ["throughput", "latency", "backlog", "catch-up", "scale-out"]
    results: dict[str, ph.PhaseResult] = {}
    baseline: base.Baseline | None = None
    machine: dict[str, Any] = {}
    # A fresh stack for each phase: what one phase left queued must not slow the next.
    for phase in only:
        say(f"bench: {phase}: starting a fresh stack (new database, scratch var/, free ports)")
        with proof_stack(
            seed=0, quiet=True, faults=False, name="bench", scratch=args.scratch
        ) as stack:
            if baseline is None:
                say(f"bench: baseline, {args.baseline_messages:,} raw 1 KB messages")
                baseline = asyncio.run(base.measure(_kafka(stack), args.baseline_messages))
                machine = _machine(stack, load_average)
            results[phase] = asyncio.run(_phase(stack, phase, args))
            if args.logs is not None:
                shutil.copytree(stack.var / "log", args.logs / phase, dirs_exist_ok=True)
    assert baseline is not None
    figures = report.summary(baseline, results, provenance.run(args, began, machine))
    print(report.table(figures))
    report.write(figures, args.json)
    say(f"bench: figures in {args.json}; {time.monotonic() - started:.0f} s in all")
    lost = [name for name, p in figures["phases"].items() if p["done"] < p["offered"]]
    doubled = [name for name, p in figures["phases"].items() if p["duplicates"]]
    if doubled:
        say(f"bench: emails doubled in {doubled}")
    if lost:
        say(f"bench: not everything was done within the budget in {lost} (see the table)")
    return 1 if doubled else 0


def _compare(before: Path, after: Path) -> int:
    for path in (before, after):
        if not path.is_file():
            print(f"bench --compare: {path} is not a file (a run's --json output)", file=sys.stderr)
            return 2
    try:
        print(compare(before, after))
    except (ValueError, KeyError, TypeError) as exc:
        print(f"bench --compare: not a bench run's figures: {exc}", file=sys.stderr)
        return 2
    return 0


def _kafka(stack: ProofStack) -> ServiceSettings:
    return ServiceSettings(
        kafka_bootstrap_servers=stack.bootstrap, topic_prefix=stack.settings.topic_prefix
    )


async def _phase(stack: ProofStack, phase: str, args: argparse.Namespace) -> ph.PhaseResult:
    """The phase's figures; with --profile, the services sampled meanwhile."""
    if args.profile is None:
        return await _measure(stack, phase, args)

    def pids() -> dict[str, int]:
        return {name: p.pid for name, p in stack.stack.processes}

    measuring = asyncio.Event()
    recording = asyncio.create_task(
        profile.record(pids, args.profile / phase, args.profile_seconds, measuring=measuring)
    )
    result = await _measure(stack, phase, args, measuring)
    profiles = await recording
    say(f"bench: {phase}: where the CPU goes (py-spy, raw stacks in {args.profile / phase})")
    print(profile.table(profiles))
    return result


async def _measure(
    stack: ProofStack, phase: str, args: argparse.Namespace, measuring: asyncio.Event | None = None
) -> ph.PhaseResult:
    def watched() -> list[Watched]:
        # Asked as the phase starts its meter: a profile's warm-up counts from here.
        if measuring is not None:
            measuring.set()
        # Those running: a service the phase stopped (the catch-up's) has nothing to count.
        running = {name: p.pid for name, p in stack.stack.processes if p.poll() is None}
        return stack_processes(running)

    if phase == "throughput":
        say(f"bench: throughput, {args.appointments:,} appointments")
        return await ph.throughput(
            stack, watched(), args.appointments, args.advisors, args.http_share,
            args.http_concurrency, args.phase_budget_s, args.window,
        )  # fmt: skip
    if phase == "latency":
        say(f"bench: latency, {args.latency_rate:g}/s with Graph +{args.graph_latency_ms} ms")
        return await ph.latency(
            stack, watched(), args.latency_rate, args.latency_seconds, args.graph_latency_ms,
            args.advisors, args.phase_budget_s,
        )  # fmt: skip
    if phase == "backlog":
        say(f"bench: backlog, {args.backlog:,} AppointmentRequested waiting")
        return await ph.backlog(stack, watched, args.backlog, args.advisors, args.phase_budget_s)
    if phase == "catch-up":
        say(f"bench: catch-up, {args.catch_up:,} appointments waiting for each service alone")
        return await ph.catch_up(stack, watched, args.catch_up, args.advisors, args.phase_budget_s)
    say(f"bench: scale-out, {args.replicas} copies of meetings and notifications")
    partitions = await _scale_out(stack, args.replicas)
    result = await ph.throughput(
        stack, watched(), args.appointments, args.advisors, args.http_share,
        args.http_concurrency, args.phase_budget_s, args.window, name="scale-out", seed=4,
    )  # fmt: skip
    result.extra["partitions"] = partitions
    return result


async def _scale_out(stack: ProofStack, replicas: int) -> dict[str, list[int | None]]:
    """Start the extra copies and wait until the group shares the partitions among them."""
    urls: dict[str, list[str]] = {}
    for service in ("meetings", "notifications"):
        prefix = next(s.env_prefix for s in SERVICES if s.name == service)
        urls[service] = [stack.url(service)]
        for n in range(2, replicas + 1):
            port = free_port()
            # Its own admin port too: public + 1000 may be taken for a port picked at random.
            ports = {f"{prefix}HTTP_PORT": str(port), f"{prefix}ADMIN_PORT": str(free_port())}
            stack.stack.replicate(service, f"{service}-{n}", ports)
            urls[service].append(f"http://{stack.settings.host}:{port}")
    deadline = time.monotonic() + 90
    while True:
        shares = {s: [ph.consumer_partitions(u) for u in found] for s, found in urls.items()}
        # Shared once every copy has some and together they hold each partition once: both
        # services read two topics of ServiceSettings().topic_partitions partitions.
        settled = all(
            all(shares[s]) and sum(n or 0 for n in shares[s]) == 2 * _PARTITIONS for s in shares
        )
        if settled:
            return shares
        if time.monotonic() > deadline:
            say(f"bench: partitions not shared after 90 s: {shares}")
            return shares
        await asyncio.sleep(1)  # waiting for the group's rebalance, with a deadline


def _machine(stack: ProofStack, load_average: list[float]) -> dict[str, Any]:
    server, why = database_server()
    version = asyncio.run(_server_version(stack.owner_dsn))
    return provenance.machine(f"{database_label(server)}, {why}", version, load_average)


async def _server_version(dsn: str) -> str | None:
    conn = await asyncpg.connect(dsn)
    try:
        version: str | None = await conn.fetchval("SHOW server_version")
        return version
    finally:
        await conn.close()
