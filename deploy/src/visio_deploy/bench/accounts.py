"""Whose CPU is whose: our own processes with their broker and database (the headline), the
fakes that stand in for Microsoft 365 and a mail relay, the load generator, and the parts of a
shared PostgreSQL server no run can claim."""

from __future__ import annotations

import re

OWN = "own"
FAKES = "fakes"
LOAD = "load generator"
SHARED = "not counted"
GROUPS = (OWN, FAKES, LOAD, SHARED)
GROUP_TITLES = {
    OWN: "our processes, broker and database",
    FAKES: "fakes (Graph emulator, SMTP sink)",
    LOAD: "load generator",
    SHARED: "not counted: PostgreSQL's server-wide processes",
}

# The names the bench gives what it watches (the stack's process names, and two of its own).
SERVICES = ("booking", "meetings", "notifications", "consent", "alerts")
POSTGRESQL = "postgresql"  # the backends of the run's own database
POSTGRESQL_SERVER = "postgresql server (shared)"  # postmaster, checkpointer, WAL writer…
LOAD_PROCESS = "load generator (bench)"
LOAD_SQL = "load generator's SQL (probe, sampler)"
_FAKES = ("graph-emulator", "smtp-sink")
_REPLICA = re.compile(r"-\d+$")  # meetings-2: a scale-out copy of meetings


def base_name(name: str) -> str:
    return _REPLICA.sub("", name)


def is_service(name: str) -> bool:
    return base_name(name) in SERVICES


def group_of(name: str) -> str:
    """A process the bench does not know counts as ours: the headline may then be too high,
    never too low."""
    if name in _FAKES:
        return FAKES
    if name.startswith(LOAD):
        return LOAD
    if name == POSTGRESQL_SERVER:
        return SHARED
    return OWN


def by_group(per_process: dict[str, float]) -> dict[str, float]:
    """The per-process figures summed per group, every group present (0 when nothing ran)."""
    sums = dict.fromkeys(GROUPS, 0.0)
    for name, value in per_process.items():
        sums[group_of(name)] += value
    return {group: round(value, 2) for group, value in sums.items()}
