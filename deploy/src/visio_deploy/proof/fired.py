"""Faults seen to fire: every fault class the chaos run plans is counted where it fires — the
Graph emulator's own count of what it injected (429 with Retry-After, 503, 504, commit-then-504),
the SMTP sink's log (451, hang-up), the PostgreSQL and broker proxies' cuts, the SIGKILLs of
each service — and the run fails if a planned class fired zero times: a run whose faults were
never injected proves nothing about them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from visio_deploy.proof.report import Report
from visio_deploy.proof.stack import SERVICES_TO_KILL

if TYPE_CHECKING:
    from visio_deploy.proof.chaos import ChaosOptions

# The emulator's name of each Graph fault class → the class's name in the report.
GRAPH = {
    "429": "graph 429 (Retry-After)",
    "503": "graph 503",
    "504": "graph 504",
    "commit-then-504": "graph commit-then-504",
}
SMTP = {"451": "smtp 451", "dropped": "smtp hang-up"}
POSTGRES = "postgres connection cut"
BROKER = "broker connection cut"
NEVER_FIRED = "planned fault classes that never fired"


def kill_class(service: str) -> str:
    return f"SIGKILL {service}"


def planned(options: ChaosOptions) -> list[str]:
    """The classes this run's settings plan to inject."""
    classes: list[str] = []
    if options.graph_fault_rate > 0:
        classes += GRAPH.values()
    if options.smtp_fail_share > 0:
        classes.append(SMTP["451"])
    if options.smtp_drop_share > 0:
        classes.append(SMTP["dropped"])
    if options.pg_cut_every_s > 0:
        classes.append(POSTGRES)
    if options.broker_cut_every_s > 0:
        classes.append(BROKER)
    if options.kill_every_s > 0:
        classes += [kill_class(service) for service in SERVICES_TO_KILL]
    return classes


def judge(
    report: Report,
    options: ChaosOptions,
    graph: dict[str, int],
    smtp: dict[str, int],
    postgres_cuts: int,
    broker_cuts: int,
    kills: dict[str, int],
) -> None:
    fired = {name: graph.get(kind, 0) for kind, name in GRAPH.items()}
    fired |= {name: smtp.get(kind, 0) for kind, name in SMTP.items()}
    fired[POSTGRES] = postgres_cuts
    fired[BROKER] = broker_cuts
    fired |= {kill_class(service): kills.get(service, 0) for service in SERVICES_TO_KILL}
    plan = planned(options)
    report.figures["faults fired, by class"] = {name: fired[name] for name in plan}
    silent = [name for name in plan if fired[name] == 0]
    report.zero(NEVER_FIRED, len(silent))
    if silent:
        report.details["fault classes planned that never fired"] = silent
