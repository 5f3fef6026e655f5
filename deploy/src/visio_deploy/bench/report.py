"""The bench's figures as JSON for machines and as a table for people: the headline (the CPU of
our own processes, broker and database per appointment) first, then each phase, the CPU of
each process grouped by whose it is, memory, and the targets of issue 20 beside the figures."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from visio_deploy.bench import accounts, targets
from visio_deploy.bench.baseline import Baseline
from visio_deploy.bench.phases import PhaseResult

MB = 1024 * 1024
FORMAT = 2  # of the JSON: 2 added the run's provenance, the CPU groups and per-appointment done


def per_appointment(seconds: dict[str, float], done: int) -> dict[str, float]:
    if not done:
        return {}
    return {name: round(s * 1000 / done, 2) for name, s in sorted(seconds.items())}


def _phase(phase: PhaseResult, baseline: Baseline) -> dict[str, Any]:
    measured = phase.measured
    cpu = per_appointment(measured.cpu_s, phase.done)
    return {
        "offered": phase.offered,
        "done": phase.done,
        "seconds": round(phase.seconds, 2),
        "done_per_s": round(phase.rate, 1),
        "fraction_of_baseline_consume": round(phase.rate / baseline.consume_per_s, 4),
        "progress": asdict(phase.progress),
        "cpu_s": {name: round(s, 3) for name, s in sorted(measured.cpu_s.items())},
        "cpu_ms_per_appointment": cpu,
        "cpu_ms_per_appointment_by_group": accounts.by_group(cpu) if cpu else {},
        "postgresql_backends": measured.backends.as_dict(),
        "machine_cpu_s": measured.machine,
        "rss_peak_mb": {k: round(v / MB, 1) for k, v in sorted(measured.rss_peak.items())},
        "duplicates": phase.duplicates,
        "refused": phase.refused,
        **phase.extra,
    }


def summary(
    baseline: Baseline, phases: dict[str, PhaseResult], run: dict[str, Any]
) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "format": FORMAT,
        "run": run,
        "baseline": asdict(baseline),
        "phases": {name: _phase(phase, baseline) for name, phase in phases.items()},
    }
    groups = figures["phases"].get("throughput", {}).get("cpu_ms_per_appointment_by_group")
    figures["headline"] = {
        "own_cpu_ms_per_appointment": (groups or {}).get(accounts.OWN),
        "fakes_cpu_ms_per_appointment": (groups or {}).get(accounts.FAKES),
        "load_generator_cpu_ms_per_appointment": (groups or {}).get(accounts.LOAD),
        "done_per_s": figures["phases"].get("throughput", {}).get("done_per_s"),
    }
    figures["targets"] = targets.judge(figures)
    return figures


def _run_lines(figures: dict[str, Any]) -> list[str]:
    run = figures["run"]
    m = run["machine"]
    commit = (run["commit"] or "unknown")[:12]
    changed = " + uncommitted changes" if run["uncommitted_changes"] else ""
    settings = run["settings"]
    return [
        f"run: commit {commit}{changed} ({run['branch']}), {run['date']}",
        f"machine: {m['host']}, {m['cpus']} × {m['cpu_model']}, {m['memory_gb']} GB, "
        f"load average {m['load_average_at_start'][0]} at start; broker {m['broker']}; "
        f"PostgreSQL {m['postgresql_version']} ({m['postgresql']})",
        "settings: " + ", ".join(f"{k} {v}" for k, v in settings.items()),
    ]


def _phase_lines(figures: dict[str, Any]) -> list[str]:
    lines = [
        f"{'phase':<12} {'offered':>8} {'done':>8} {'seconds':>8} {'done/s':>8} "
        f"{'of base':>8} {'others':>7}  notes",
    ]
    for name, phase in figures["phases"].items():
        notes = []
        for key in ("booking_api_p50_ms", "booking_api_p99_ms", "accepted_to_email_p50_ms",
                    "accepted_to_email_p99_ms", "meetings_per_s", "notifications_per_s",
                    "consent_per_s", "partitions", "window"):  # fmt: skip
            if phase.get(key) is not None:
                notes.append(f"{key}={phase[key]}")
        if phase["duplicates"]:
            notes.append(f"DUPLICATE EMAILS={phase['duplicates']}")
        if phase["refused"]:
            notes.append(f"refused={phase['refused']}")
        machine = phase["machine_cpu_s"]
        others = machine["others_cpu_s"] / machine["capacity_cpu_s"] if machine else 0.0
        lines.append(
            f"{name:<12} {phase['offered']:>8,} {phase['done']:>8,} {phase['seconds']:>8.1f} "
            f"{phase['done_per_s']:>8.1f} {phase['fraction_of_baseline_consume']:>8.2%} "
            f"{others:>7.0%}  " + "; ".join(notes)
        )
    lines.append(
        "  done: each appointment on its own has its meeting, its confirmation email, its "
        "`confirmed` status and its two ledger records (backlog, catch-up: no status, booking is "
        "bypassed)"
    )
    lines.append(
        "  others: the machine's CPU used outside the bench's processes during the phase "
        "(other programs, the kernel), as a share of all its CPUs"
    )
    return lines


def _cpu_lines(name: str, phase: dict[str, Any]) -> list[str]:
    cpu: dict[str, float] = phase["cpu_ms_per_appointment"]
    groups = phase["cpu_ms_per_appointment_by_group"]
    backends = phase["postgresql_backends"]
    lines = [f"CPU-ms per appointment ({name}, {phase['done']:,} done; user + sys from the OS):"]
    for group in accounts.GROUPS:
        lines.append(f"  {accounts.GROUP_TITLES[group]:<50} {groups[group]:>8.2f}")
        members = sorted(
            ((k, v) for k, v in cpu.items() if accounts.group_of(k) == group),
            key=lambda item: -item[1],
        )
        for process, ms in members:
            note = ""
            if process == accounts.POSTGRESQL:
                note = (
                    f"   {backends['seen']} backends of the run's database, "
                    f"{backends['ended']} ended during the phase"
                )
                if backends["missed"]:
                    note += f", {backends['missed']} came and went unseen"
            lines.append(f"    {process:<48} {ms:>8.2f}{note}")
    if backends["unreadable"]:
        lines.append(
            f"  {backends['unreadable']} PostgreSQL processes could not be read on this machine "
            "(a server elsewhere or in a container): the database's CPU is missing from the figure"
        )
    machine = phase["machine_cpu_s"]
    lines.append(
        f"  machine: {machine['capacity_cpu_s']} CPU-s in the phase, {machine['busy_cpu_s']} "
        f"busy: the bench's processes {machine['watched_cpu_s']}, others "
        f"{machine['others_cpu_s']}"
    )
    return lines


def table(figures: dict[str, Any]) -> str:
    base = figures["baseline"]
    head = figures["headline"]
    lines = [
        *_run_lines(figures),
        "",
        f"baseline (raw aiokafka, 1 KB, acks=all, {base['messages']:,} messages): "
        f"produce {base['produce_per_s']:,.0f}/s, consume {base['consume_per_s']:,.0f}/s",
    ]
    if head["own_cpu_ms_per_appointment"] is not None:
        lines += [
            "",
            f"HEADLINE: {head['own_cpu_ms_per_appointment']:.2f} CPU-ms per appointment for our "
            f"processes, broker and database (fakes {head['fakes_cpu_ms_per_appointment']:.2f}, "
            f"load generator {head['load_generator_cpu_ms_per_appointment']:.2f}); "
            f"{head['done_per_s']} appointments fully done per second",
        ]
    lines += ["", *_phase_lines(figures)]
    for name in ("throughput", "scale-out"):
        phase = figures["phases"].get(name)
        if phase and phase["cpu_ms_per_appointment"]:
            lines += ["", *_cpu_lines(name, phase)]
    for name in ("throughput", "backlog", "catch-up", "scale-out"):
        phase = figures["phases"].get(name)
        if phase and phase["rss_peak_mb"]:
            peaks = ", ".join(f"{k} {v:.0f}" for k, v in phase["rss_peak_mb"].items()
                              if accounts.is_service(k))  # fmt: skip
            lines.append(f"peak RSS MB ({name}): {peaks}")
    lines += ["", "targets of issue 20 (on the 2-core machine):"]
    lines += targets.table(figures["targets"])
    return "\n".join(lines)


def write(figures: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
