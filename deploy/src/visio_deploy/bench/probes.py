"""What the bench reads off the machine and the stack while a phase runs: CPU time and peak RSS
of every process (from the OS), and how many appointments each service has finished (from the
services' own tables and the SMTP sink's folder)."""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import psutil


@dataclass
class Watched:
    name: str
    process: psutil.Process


def stack_processes(pids: dict[str, int]) -> list[Watched]:
    """The stack's processes by name, plus PostgreSQL (every `postgres` process on the machine:
    the server is shared, its backends are where the SQL runs) and this load generator."""
    watched = [Watched(name, psutil.Process(pid)) for name, pid in pids.items()]
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] in ("postgres", "postmaster"):
            watched.append(Watched("postgresql", proc))
    watched.append(Watched("load generator (bench)", psutil.Process(os.getpid())))
    return watched


@dataclass
class CpuUse:
    """CPU seconds (user + sys) per process name over a phase; a process that ended or started
    during the phase counts for what the OS saw of it."""

    seconds: dict[str, float]

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def _cpu(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
        # Children the process waited for count too (tansu's or PostgreSQL's helpers).
        return float(times.user + times.system + times.children_user + times.children_system)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0.0


class CpuMeter:
    def __init__(self, watched: list[Watched]) -> None:
        self.watched = watched
        self.start = {id(w.process): _cpu(w.process) for w in watched}

    def stop(self) -> CpuUse:
        seconds: dict[str, float] = {}
        for w in self.watched:
            used = max(0.0, _cpu(w.process) - self.start.get(id(w.process), 0.0))
            seconds[w.name] = seconds.get(w.name, 0.0) + used
        return CpuUse(seconds)


@dataclass
class RssPeaks:
    """The largest resident set seen for each process name, sampled every `every_s`."""

    watched: list[Watched]
    every_s: float = 0.25
    peaks: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RssPeaks:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            for w in self.watched:
                try:
                    rss = w.process.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                self.peaks[w.name] = max(self.peaks.get(w.name, 0), rss)
            self._stop.wait(self.every_s)


@dataclass(frozen=True)
class Progress:
    """Appointments finished since a phase began, service by service."""

    meetings: int
    emails: int
    confirmed: int
    consent: int

    @property
    def fully_done(self) -> int:
        """Meeting created, email in the sink, status confirmed and consent recorded: the
        confirmed status already implies the first two, the sink is counted anyway."""
        return min(self.meetings, self.emails, self.confirmed, self.consent)


class ProgressProbe:
    """Counts rows created after `since` (so one stack serves every phase) and the sink's
    files beyond those already there."""

    def __init__(self, dsn: str, mail_dir: Path) -> None:
        self.dsn = dsn
        self.mail_dir = mail_dir
        self.since = time.time()
        self.mails_before = 0
        self.conn: asyncpg.Connection | None = None

    async def __aenter__(self) -> ProgressProbe:
        self.conn = await asyncpg.connect(self.dsn)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self.conn is not None:
            await self.conn.close()

    def begin(self) -> None:
        self.since = time.time()
        self.mails_before = count_mails(self.mail_dir)

    async def read(self) -> Progress:
        assert self.conn is not None
        since = datetime.fromtimestamp(self.since, UTC)
        row = await self.conn.fetchrow(
            """
            SELECT
              (SELECT count(*) FROM meetings.meetings
                 WHERE status = 'ready' AND created_at >= $1) AS meetings,
              (SELECT count(*) FROM booking.appointments
                 WHERE status = 'confirmed' AND created_at >= $1) AS confirmed,
              (SELECT count(*) FROM consent.ledger
                 WHERE kind = 'cgu_accepted' AND recorded_at >= $1) AS consent
            """,
            since,
        )
        assert row is not None
        return Progress(
            meetings=row["meetings"],
            emails=count_mails(self.mail_dir) - self.mails_before,
            confirmed=row["confirmed"],
            consent=row["consent"],
        )


def count_mails(mail_dir: Path) -> int:
    with os.scandir(mail_dir) as entries:
        return sum(1 for entry in entries if entry.name.endswith(".eml"))


def percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile (p50: share=0.5); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered), math.ceil(share * len(ordered))) - 1)
    return ordered[rank]
