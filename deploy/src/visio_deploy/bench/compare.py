"""`visio-rdv bench --compare before.json after.json`: two runs' figures side by side in one
table, with after/before and the targets of issue 20, and first what makes the two runs
unlike (another machine, other settings, uncommitted changes) so a ratio is read for what it is."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visio_deploy.bench import accounts
from visio_deploy.bench.targets import TARGETS, values

Figures = dict[str, Any]
_GROUPS = {
    accounts.OWN: "own",
    accounts.FAKES: "fakes",
    accounts.LOAD: "load gen.",
    accounts.SHARED: "not counted",
}


@dataclass(frozen=True)
class Row:
    label: str
    value: Callable[[Figures], float | None]
    higher_is_better: bool | None = None  # None: a figure neither better nor worse higher
    target: str | None = None  # its key in TARGETS


def load(path: Path) -> Figures:
    """A run's JSON; one written before format 2 gets its CPU groups from its processes."""
    figures = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(figures, dict) or not isinstance(figures.get("phases"), dict):
        raise ValueError(f"{path} has no phases")
    for phase in figures.get("phases", {}).values():
        cpu = phase.get("cpu_ms_per_appointment") or {}
        if cpu and not phase.get("cpu_ms_per_appointment_by_group"):
            phase["cpu_ms_per_appointment_by_group"] = accounts.by_group(cpu)
    return figures


def _get(*path: str) -> Callable[[Figures], float | None]:
    def read(figures: Figures) -> float | None:
        found: Any = figures
        for key in path:
            if not isinstance(found, dict) or key not in found:
                return None
            found = found[key]
        return float(found) if isinstance(found, int | float) else None

    return read


def _target(key: str) -> Callable[[Figures], float | None]:
    return lambda figures: values(figures)[key]


def _others_share(phase: str) -> Callable[[Figures], float | None]:
    def read(figures: Figures) -> float | None:
        machine = figures.get("phases", {}).get(phase, {}).get("machine_cpu_s") or {}
        if not machine.get("capacity_cpu_s"):
            return None
        return round(100 * float(machine["others_cpu_s"]) / float(machine["capacity_cpu_s"]), 1)

    return read


def _share_done(phase: str) -> Callable[[Figures], float | None]:
    def read(figures: Figures) -> float | None:
        found = figures.get("phases", {}).get(phase) or {}
        if not found.get("offered"):
            return None
        return round(100 * float(found["done"]) / float(found["offered"]), 1)

    return read


def _cpu_rows(before: Figures, after: Figures) -> list[Row]:
    """The throughput's CPU per appointment: each group, then each of its processes."""
    names = {
        name
        for figures in (before, after)
        for name in (figures.get("phases", {}).get("throughput", {}).get("cpu_ms_per_appointment")
                     or {})
    }  # fmt: skip
    found = []
    for group in accounts.GROUPS:
        path = ("phases", "throughput", "cpu_ms_per_appointment_by_group", group)
        title = f"throughput CPU-ms per appt.: {_GROUPS[group]}"
        found.append(Row(title, _get(*path), False, "cpu" if group == accounts.OWN else None))
        for name in sorted(n for n in names if accounts.group_of(n) == group):
            path = ("phases", "throughput", "cpu_ms_per_appointment", name)
            found.append(Row(f"  {name}", _get(*path), False))
    return found


def rows(before: Figures, after: Figures) -> list[Row]:
    return [
        Row("broker baseline: produce /s", _get("baseline", "produce_per_s"), True),
        Row("broker baseline: consume /s", _get("baseline", "consume_per_s"), True),
        Row("throughput: appointments fully done /s", _target("throughput"), True, "throughput"),
        Row("throughput: share of offered done in budget %", _share_done("throughput"), True),
        *_cpu_rows(before, after),
        Row("throughput: booking API p99 ms", _get("phases", "throughput", "booking_api_p99_ms"),
            False),
        Row("throughput: others' share of the machine %", _others_share("throughput")),
        Row("latency: booking API p50 ms", _get("phases", "latency", "booking_api_p50_ms"), False),
        Row("latency: booking API p99 ms", _target("booking_p99"), False, "booking_p99"),
        Row("latency: accepted → email p50 ms",
            _get("phases", "latency", "accepted_to_email_p50_ms"), False),
        Row("latency: accepted → email p99 ms", _target("email_p99"), False, "email_p99"),
        Row("latency: share of offered done in budget %", _share_done("latency"), True),
        Row("latency: others' share of the machine %", _others_share("latency")),
        Row("backlog: meetings drained /s", _target("backlog_meetings"), True, "backlog_meetings"),
        Row("backlog: notifications drained /s", _target("backlog_notifications"), True,
            "backlog_notifications"),
        Row("backlog: consent drained /s", _target("backlog_consent"), True, "backlog_consent"),
        Row("backlog: share of the backlog done in budget %", _share_done("backlog"), True),
        Row("backlog: others' share of the machine %", _others_share("backlog")),
        Row("catch-up: meetings alone /s", _target("alone_meetings"), True, "alone_meetings"),
        Row("catch-up: notifications alone /s", _target("alone_notifications"), True,
            "alone_notifications"),
        Row("catch-up: consent alone /s", _target("alone_consent"), True, "alone_consent"),
        Row("scale-out: appointments fully done /s", _get("phases", "scale-out", "done_per_s"),
            True),
        Row("scale-out: own CPU-ms per appointment",
            _get("phases", "scale-out", "cpu_ms_per_appointment_by_group", accounts.OWN), False),
        Row("largest RSS of a service MB", _target("rss"), False, "rss"),
    ]  # fmt: skip


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 100 else f"{value:.2f}"


def ratio(before: float | None, after: float | None, higher_is_better: bool | None) -> str:
    if before is None or after is None or before == 0:
        return "-"
    times = after / before
    if higher_is_better is None or f"{times:.2f}" == "1.00":
        return f"×{times:.2f}"
    better = times > 1 if higher_is_better else times < 1
    return f"×{times:.2f} {'better' if better else 'worse'}"


def differences(before: Figures, after: Figures) -> list[str]:
    """What makes the two runs unlike, beyond the code they measured."""
    found = []
    for name, figures in (("before", before), ("after", after)):
        run = figures.get("run")
        if not run:
            found.append(f"{name}: written by an older bench (no commit, machine or settings)")
        elif run.get("uncommitted_changes"):
            found.append(f"{name}: measured a checkout with uncommitted changes")
    m1 = before.get("run", {}).get("machine", {})
    m2 = after.get("run", {}).get("machine", {})
    for key in ("host", "cpus", "cpu_model", "memory_gb", "postgresql_version"):
        if m1 and m2 and m1.get(key) != m2.get(key):
            found.append(f"machine {key}: {m1.get(key)} before, {m2.get(key)} after")
    s1 = before.get("run", {}).get("settings", {})
    s2 = after.get("run", {}).get("settings", {})
    for key in sorted(set(s1) | set(s2)):
        if s1 and s2 and s1.get(key) != s2.get(key):
            found.append(f"setting {key}: {s1.get(key)} before, {s2.get(key)} after")
    return found


def _describe(name: str, figures: Figures) -> str:
    run = figures.get("run") or {}
    machine = run.get("machine") or {}
    load = (machine.get("load_average_at_start") or ["?"])[0]
    return (
        f"{name}: commit {(run.get('commit') or 'unknown')[:12]} ({run.get('branch', '?')}), "
        f"{run.get('date', 'date unknown')}, {machine.get('host', '?')} "
        f"({machine.get('cpus', '?')} CPUs), load average {load} at start"
    )


def table(before: Figures, after: Figures) -> str:
    lines = [_describe("before", before), _describe("after", after)]
    unlike = differences(before, after)
    if unlike:
        lines += ["", "the two runs differ in more than their code:"]
        lines += [f"  ! {line}" for line in unlike]
    lines += [
        "",
        f"{'figure':<48} {'before':>10} {'after':>10} {'after/before':>14} "
        f"{'must reach':>12} {'aim':>12}",
    ]
    for row in rows(before, after):
        first, second = row.value(before), row.value(after)
        if first is None and second is None:
            continue
        target = TARGETS.get(row.target or "")
        must = target.bound(target.must) if target else ""
        aim = target.bound(target.aim) if target else ""
        lines.append(
            f"{row.label:<48} {_number(first):>10} {_number(second):>10} "
            f"{ratio(first, second, row.higher_is_better):>14} {must:>12} {aim:>12}".rstrip()
        )
    return "\n".join(lines)


def compare(before: Path, after: Path) -> str:
    return table(load(before), load(after))
