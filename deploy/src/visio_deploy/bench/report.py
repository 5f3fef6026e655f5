"""The bench's figures as a table for people and as JSON for machines, each target beside the
measured figure, and how far it is from it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from visio_deploy.bench.baseline import Baseline
from visio_deploy.bench.phases import PhaseResult

MB = 1024 * 1024


@dataclass(frozen=True)
class Target:
    what: str
    goal: float
    higher_is_better: bool
    unit: str

    def judge(self, value: float | None) -> str:
        if value is None:
            return "not measured"
        met = value >= self.goal if self.higher_is_better else value <= self.goal
        if met:
            return "met"
        gap = (self.goal - value) / self.goal if self.higher_is_better else value / self.goal
        return f"missed ({gap:.0%} short)" if self.higher_is_better else f"missed (×{gap:.1f})"


TARGETS = {
    "throughput": Target("appointments fully done per second", 300, True, "/s"),
    "cpu": Target("CPU-ms per appointment, all processes", 6, False, "ms"),
    "booking_p99": Target("booking API p99 at 50/s", 25, False, "ms"),
    "email_p99": Target("accepted → email p99 at 50/s", 1500, False, "ms"),
    "backlog": Target("backlog drained per second", 500, True, "/s"),
    "rss": Target("largest service RSS", 250, False, "MB"),
}
SERVICES = ("booking", "meetings", "notifications", "consent")


def cpu_ms_per_appointment(phase: PhaseResult) -> dict[str, float]:
    if not phase.done:
        return {}
    return {name: round(s * 1000 / phase.done, 2) for name, s in sorted(phase.cpu_s.items())}


def summary(
    baseline: Baseline, phases: dict[str, PhaseResult], machine: dict[str, Any]
) -> dict[str, Any]:
    figures: dict[str, Any] = {"machine": machine, "baseline": asdict(baseline), "phases": {}}
    for name, phase in phases.items():
        figures["phases"][name] = {
            "offered": phase.offered,
            "done": phase.done,
            "seconds": round(phase.seconds, 2),
            "done_per_s": round(phase.rate, 1),
            "fraction_of_baseline_consume": round(phase.rate / baseline.consume_per_s, 4),
            "progress": asdict(phase.progress),
            "cpu_ms_per_appointment": cpu_ms_per_appointment(phase),
            "rss_peak_mb": {k: round(v / MB, 1) for k, v in sorted(phase.rss_peak.items())},
            "duplicates": phase.duplicates,
            "refused": phase.refused,
            **phase.extra,
        }
    figures["targets"] = _targets(phases)
    return figures


def _targets(phases: dict[str, PhaseResult]) -> dict[str, dict[str, Any]]:
    through = phases.get("throughput")
    latency = phases.get("latency")
    backlog = phases.get("backlog")
    cpu = cpu_ms_per_appointment(through) if through else {}
    services_cpu = sum(v for k, v in cpu.items() if not k.startswith("load generator"))
    rss = [
        v / MB
        for phase in phases.values()
        for k, v in phase.rss_peak.items()
        if k.split("-")[0] in SERVICES
    ]
    values: dict[str, float | None] = {
        "throughput": through.rate if through else None,
        "cpu": services_cpu if cpu else None,
        "booking_p99": latency.extra.get("booking_api_p99_ms") if latency else None,
        "email_p99": latency.extra.get("accepted_to_email_p99_ms") if latency else None,
        "backlog": backlog.extra.get("drain_per_s") if backlog else None,
        "rss": max(rss) if rss else None,
    }
    return {
        key: {
            "what": target.what,
            "target": target.goal,
            "unit": target.unit,
            "measured": None if values[key] is None else round(float(values[key] or 0), 1),
            "verdict": target.judge(values[key]),
        }
        for key, target in TARGETS.items()
    }


def table(figures: dict[str, Any]) -> str:
    base = figures["baseline"]
    lines = [
        f"machine: {figures['machine']['cpus']} CPUs, {figures['machine']['memory_gb']} GB; "
        f"broker {figures['machine']['broker']}; PostgreSQL {figures['machine']['postgresql']}",
        "",
        f"baseline (raw aiokafka, 1 KB, acks=all, {base['messages']:,} messages): "
        f"produce {base['produce_per_s']:,.0f}/s, consume {base['consume_per_s']:,.0f}/s",
        "",
        f"{'phase':<12} {'offered':>8} {'done':>8} {'seconds':>8} {'done/s':>8} "
        f"{'of base':>8}  notes",
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
        lines.append(
            f"{name:<12} {phase['offered']:>8,} {phase['done']:>8,} {phase['seconds']:>8.1f} "
            f"{phase['done_per_s']:>8.1f} {phase['fraction_of_baseline_consume']:>8.2%}  "
            + "; ".join(notes)
        )
    for name in ("throughput", "scale-out"):
        phase = figures["phases"].get(name)
        if phase and phase["cpu_ms_per_appointment"]:
            cpu = phase["cpu_ms_per_appointment"]
            lines += ["", f"CPU-ms per appointment ({name}, user+sys from the OS):"]
            lines += [f"  {k:<24} {v:>7.2f}" for k, v in cpu.items()]
            lines.append(f"  {'total':<24} {sum(cpu.values()):>7.2f}")
    for name in ("throughput", "backlog", "scale-out"):
        phase = figures["phases"].get(name)
        if phase and phase["rss_peak_mb"]:
            peaks = ", ".join(f"{k} {v:.0f}" for k, v in phase["rss_peak_mb"].items()
                              if k.split("-")[0] in SERVICES)  # fmt: skip
            lines.append(f"peak RSS MB ({name}): {peaks}")
    lines += ["", "targets:"]
    for target in figures["targets"].values():
        lines.append(
            f"  {target['what']:<40} target {target['target']:>6g}{target['unit']:<3} "
            f"measured {target['measured'] if target['measured'] is not None else '-':>8}  "
            f"{target['verdict']}"
        )
    return "\n".join(lines)


def write(figures: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
