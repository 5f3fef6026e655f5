"""What the bench reads off the machine while a phase runs: the CPU time (user + sys, from the
OS) of every process of the stack, of the PostgreSQL backends of the run's own database and of
the load generator; the peak resident memory of each; and how busy the whole machine was, so a
reader knows whether something else ran beside the bench."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import psutil

from visio_deploy.bench.accounts import LOAD_PROCESS
from visio_deploy.bench.backends import BackendFigures, DatabaseBackends


@dataclass
class Watched:
    name: str
    process: psutil.Process
    with_children: bool = True


def stack_processes(pids: dict[str, int]) -> list[Watched]:
    """The stack's processes by name, and this load generator. PostgreSQL is measured apart
    (`DatabaseBackends`): its server is shared, only the run's own backends are the run's."""
    watched = [Watched(name, psutil.Process(pid)) for name, pid in pids.items()]
    # The stack's processes are this one's children: once one ends and is reaped, its time
    # would show again in this one's children's time.
    watched.append(Watched(LOAD_PROCESS, psutil.Process(os.getpid()), with_children=False))
    return watched


def _cpu(w: Watched) -> float:
    try:
        times = w.process.cpu_times()
        used = times.user + times.system
        if w.with_children:  # helpers a process started and waited for
            used += times.children_user + times.children_system
        return float(used)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0.0


def _machine_busy_s() -> float:
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


@dataclass
class RssPeaks:
    """The largest resident set seen for each process name, sampled every `every_s`."""

    watched: list[Watched]
    every_s: float = 0.25
    peaks: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, int]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.peaks

    def _sample(self) -> None:
        while not self._stop.is_set():
            for w in self.watched:
                try:
                    rss = w.process.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                self.peaks[w.name] = max(self.peaks.get(w.name, 0), rss)
            self._stop.wait(self.every_s)


@dataclass
class Measured:
    cpu_s: dict[str, float]  # process name → CPU seconds over the phase
    rss_peak: dict[str, int]
    backends: BackendFigures
    machine: dict[str, Any]  # how busy the machine was, and by whom


class PhaseMeter:
    """`async with PhaseMeter(...) as meter:` around a phase; `meter.measured` after it.

    `load_pids`: the backends of the bench's own database connections (its progress probe),
    counted as the load generator's."""

    def __init__(self, watched: list[Watched], dsn: str, load_pids: Collection[int]) -> None:
        self.watched = watched
        self.backends = DatabaseBackends(dsn, load_pids)
        self.rss = RssPeaks(watched)
        self.measured: Measured | None = None

    async def __aenter__(self) -> PhaseMeter:
        await self.backends.start()
        self.rss.start()
        self._busy = _machine_busy_s()
        self._wall = time.monotonic()
        self._start = {id(w.process): _cpu(w) for w in self.watched}
        return self

    async def __aexit__(self, *_: object) -> None:
        seconds: dict[str, float] = {}
        for w in self.watched:
            used = max(0.0, _cpu(w) - self._start.get(id(w.process), 0.0))
            seconds[w.name] = seconds.get(w.name, 0.0) + used
        busy = _machine_busy_s() - self._busy
        wall = time.monotonic() - self._wall
        backends = await self.backends.stop()
        for bucket, used in backends.cpu_s.items():
            seconds[bucket] = seconds.get(bucket, 0.0) + used
        capacity = wall * (os.cpu_count() or 1)
        seen = sum(seconds.values())
        self.measured = Measured(
            cpu_s=seconds,
            rss_peak=self.rss.stop(),
            backends=backends,
            machine={
                "capacity_cpu_s": round(capacity, 1),
                "busy_cpu_s": round(busy, 1),
                "watched_cpu_s": round(seen, 1),
                # Other programs, and the kernel's work no process is charged with.
                "others_cpu_s": round(max(0.0, busy - seen), 1),
            },
        )
