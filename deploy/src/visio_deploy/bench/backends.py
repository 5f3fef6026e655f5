"""The CPU of the PostgreSQL backends that serve one database, on a server others may share.

A backend is a process the OS can measure, but the server hands out pids to every database:
only those `pg_stat_activity` names for the run's database (`datname`) are the run's. Backends
come and go during a phase (a pool grows, autovacuum visits a table), so they are listed again
every `every_s`: each counts from the phase's start, or from its own start if later, to its
last sample. What a backend that ended used after its last sample is not seen (at most
`every_s` of it), nor one that lived less than `every_s`: the figures say how many ended.

The server-wide processes (postmaster, checkpointer, WAL and background writers) serve every
database of the server: measured, reported apart, never counted as the run's."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
import psutil

from visio_deploy.bench.accounts import LOAD_SQL, POSTGRESQL, POSTGRESQL_SERVER

_POSTGRES_NAMES = ("postgres", "postmaster")
# A pid of pg_stat_activity is a process of this machine only if it started when the server
# says its backend did: otherwise the server runs elsewhere (another host, a container).
_SAME_START_S = 2.0

_LIST = """
SELECT pid, backend_start, datname IS NULL AS server_wide
FROM pg_stat_activity
WHERE datname = current_database()
   -- a client backend shows no datname until it has logged in: not a server-wide process
   OR (datname IS NULL AND backend_type <> 'client backend')
"""


@dataclass
class _Backend:
    bucket: str
    process: psutil.Process
    first_s: float  # its CPU seconds when the phase began, or 0 if it began later
    last_s: float
    ended: bool = False


@dataclass(frozen=True)
class BackendUse:
    pid: int
    bucket: str
    cpu_s: float  # over the phase so far
    ended: bool


@dataclass
class BackendFigures:
    cpu_s: dict[str, float]  # bucket → CPU seconds over the phase
    seen: int  # backends of the run's database listed during the phase
    ended: int  # of which ended before it did
    missed: int  # began during the phase and ended before they could be read
    unreadable: int  # listed by the server but not processes of this machine
    each: list[BackendUse]

    def as_dict(self) -> dict[str, int]:
        return {
            "seen": self.seen,
            "ended": self.ended,
            "missed": self.missed,
            "unreadable": self.unreadable,
        }


def _cpu(process: psutil.Process) -> float | None:
    try:
        times = process.cpu_times()
        return float(times.user + times.system)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


class _Gone(Exception):
    """The backend ended before it could be read."""


def _local_process(pid: int, started: datetime) -> psutil.Process | None:
    """The process of this machine that is this backend, or None if none is (the server
    runs elsewhere, or this user may not read it)."""
    try:
        process = psutil.Process(pid)
        same = abs(process.create_time() - started.timestamp()) < _SAME_START_S
        return process if same and process.name() in _POSTGRES_NAMES else None
    except psutil.NoSuchProcess as exc:
        raise _Gone from exc
    except psutil.AccessDenied:
        return None


@dataclass
class DatabaseBackends:
    """Samples the backends of the database `dsn` names while a phase runs. The backends of
    `load_pids` (the bench's own connections) and of its own sampling connection count as the
    load generator's."""

    dsn: str
    load_pids: Collection[int] = ()
    every_s: float = 0.2
    _known: dict[tuple[int, datetime], _Backend] = field(default_factory=dict)
    _unreadable: set[tuple[int, datetime]] = field(default_factory=set)
    _missed: set[tuple[int, datetime]] = field(default_factory=set)
    _conn: asyncpg.Connection | None = None
    _task: asyncio.Task[None] | None = None
    _began: datetime | None = None
    _postmaster: _Backend | None = None

    async def start(self) -> None:
        self._conn = await asyncpg.connect(self.dsn)
        self._began = await self._conn.fetchval("SELECT clock_timestamp()")
        await self._sample()
        self._add_postmaster()
        self._task = asyncio.create_task(self._keep_sampling())

    async def stop(self) -> BackendFigures:
        assert self._conn is not None and self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._sample()
        await self._conn.close()
        return self.figures()

    def figures(self) -> BackendFigures:
        """What the samples so far say."""
        each = [
            BackendUse(b.process.pid, b.bucket, b.last_s - b.first_s, b.ended)
            for b in [*self._known.values(), *([self._postmaster] if self._postmaster else [])]
        ]
        cpu_s: dict[str, float] = {}
        for use in each:
            cpu_s[use.bucket] = cpu_s.get(use.bucket, 0.0) + use.cpu_s
        mine = [use for use in each if use.bucket == POSTGRESQL]
        return BackendFigures(
            cpu_s=cpu_s,
            seen=len(mine),
            ended=sum(1 for use in mine if use.ended),
            missed=len(self._missed),
            unreadable=len(self._unreadable),
            each=each,
        )

    async def _keep_sampling(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)  # the sampling period, not a synchronisation
            await self._sample()

    async def _sample(self) -> None:
        assert self._conn is not None
        rows = await self._conn.fetch(_LIST)
        own_pid = self._conn.get_server_pid()
        listed = set()
        for row in rows:
            key = (row["pid"], row["backend_start"])
            listed.add(key)
            backend = self._known.get(key)
            if backend is None and key not in self._unreadable | self._missed:
                backend = self._first_sight(key, row["server_wide"], own_pid)
            if backend is not None and (cpu := _cpu(backend.process)) is not None:
                backend.last_s = cpu
        for key, backend in self._known.items():
            if key not in listed:
                backend.ended = True
        if self._postmaster is not None and (cpu := _cpu(self._postmaster.process)) is not None:
            self._postmaster.last_s = cpu

    def _first_sight(
        self, key: tuple[int, datetime], server_wide: bool, own_pid: int
    ) -> _Backend | None:
        pid, started = key
        try:
            process = _local_process(pid, started)
        except _Gone:
            self._missed.add(key)  # ended between the server's list and now
            return None
        cpu = None if process is None else _cpu(process)
        if process is None or cpu is None:
            self._unreadable.add(key)
            return None
        if server_wide:
            bucket = POSTGRESQL_SERVER
        elif pid == own_pid or pid in self.load_pids:
            bucket = LOAD_SQL
        else:
            bucket = POSTGRESQL
        assert self._began is not None
        # Begun during the phase: all it used is the phase's. Else from now on.
        first = 0.0 if started > self._began else cpu
        self._known[key] = _Backend(bucket, process, first, cpu)
        return self._known[key]

    def _add_postmaster(self) -> None:
        """The postmaster is in no view of the server: it is the parent of every backend.
        Its own time only is read: its children's is that of every backend that ended, of
        every database."""
        for backend in self._known.values():
            try:
                parent = backend.process.parent()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if parent is not None and (cpu := _cpu(parent)) is not None:
                self._postmaster = _Backend(POSTGRESQL_SERVER, parent, cpu, cpu)
                return
