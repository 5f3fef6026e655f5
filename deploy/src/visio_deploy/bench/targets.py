"""The targets of issue 20, each with what must be reached and what we aim for, read from a
run's figures (so a saved run is judged as a fresh one is) and judged: where each stands."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from visio_deploy.bench.accounts import OWN, is_service

# The latency targets hold for this load only; measured at another, they are not comparable.
LATENCY_RATE = 50.0
LATENCY_GRAPH_MS = 100


@dataclass(frozen=True)
class Target:
    what: str
    unit: str
    must: float
    aim: float
    higher_is_better: bool

    def reached(self, value: float, goal: float) -> bool:
        return value >= goal if self.higher_is_better else value <= goal

    def away(self, value: float, goal: float) -> float:
        """How many times better the value must get to reach the goal."""
        return goal / value if self.higher_is_better else value / goal

    def standing(self, value: float | None) -> str:
        if value is None:
            return "not measured"
        if self.reached(value, self.aim):
            return "aim reached"
        if self.reached(value, self.must):
            return f"must reach: met; aim ×{self.away(value, self.aim):.1f} away"
        if self.higher_is_better and value <= 0:
            return "missed: nothing done"
        return f"missed: ×{self.away(value, self.must):.1f} from must reach"

    def bound(self, goal: float) -> str:
        return f"{'≥' if self.higher_is_better else '≤'} {goal:,g} {self.unit}"


TARGETS = {
    "cpu": Target("own CPU per appointment (ours + broker + PostgreSQL)", "ms", 10, 3, False),
    "throughput": Target("appointments fully done per second, fakes included", "/s", 120, 400,
                         True),
    "backlog_meetings": Target("backlog drain: meetings", "/s", 300, 1000, True),
    "backlog_notifications": Target("backlog drain: notifications", "/s", 300, 1000, True),
    "backlog_consent": Target("backlog drain: consent", "/s", 300, 1000, True),
    # The same drains, each service catching up alone (the `catch-up` phase), the others idle.
    "alone_meetings": Target("backlog drain, alone: meetings", "/s", 300, 1000, True),
    "alone_notifications": Target("backlog drain, alone: notifications", "/s", 300, 1000, True),
    "alone_consent": Target("backlog drain, alone: consent", "/s", 300, 1000, True),
    "booking_p99": Target("booking API p99 at 50/s with Graph +100 ms", "ms", 25, 10, False),
    "email_p99": Target("accepted → email in the sink, p99, same load", "ms", 1500, 500, False),
    "rss": Target("largest RSS of a service", "MB", 200, 150, False),
}  # fmt: skip


def _phase(figures: dict[str, Any], name: str) -> dict[str, Any]:
    phase: dict[str, Any] = figures.get("phases", {}).get(name) or {}
    return phase


def values(figures: dict[str, Any]) -> dict[str, float | None]:
    """Each target's figure in a run (None where the run did not measure it)."""
    through = _phase(figures, "throughput")
    latency = _phase(figures, "latency")
    backlog = _phase(figures, "backlog")
    alone = _phase(figures, "catch-up")
    own = (through.get("cpu_ms_per_appointment_by_group") or {}).get(OWN)
    rss = [
        mb
        for phase in figures.get("phases", {}).values()
        for name, mb in (phase.get("rss_peak_mb") or {}).items()
        if is_service(name)
    ]
    return {
        "cpu": own,
        "throughput": through.get("done_per_s"),
        "backlog_meetings": backlog.get("meetings_per_s"),
        "backlog_notifications": backlog.get("notifications_per_s"),
        "backlog_consent": backlog.get("consent_per_s"),
        "alone_meetings": alone.get("meetings_per_s"),
        "alone_notifications": alone.get("notifications_per_s"),
        "alone_consent": alone.get("consent_per_s"),
        "booking_p99": latency.get("booking_api_p99_ms"),
        "email_p99": latency.get("accepted_to_email_p99_ms"),
        "rss": max(rss) if rss else None,
    }


def caveat(figures: dict[str, Any], key: str) -> str | None:
    """Why a figure of this run cannot be held against its target, if it cannot."""
    if figures.get("run", {}).get("settings", {}).get("smoke"):
        return "smoke run: sizes too small to judge"
    latency = _phase(figures, "latency")
    if key in ("booking_p99", "email_p99") and latency:
        rate, graph_ms = latency.get("offered_rate"), latency.get("graph_latency_ms")
        if rate != LATENCY_RATE or graph_ms != LATENCY_GRAPH_MS:
            return f"not comparable: measured at {rate:g}/s with Graph +{graph_ms} ms"
    return None


def judge(figures: dict[str, Any]) -> dict[str, dict[str, Any]]:
    measured = values(figures)
    judged = {}
    for key, target in TARGETS.items():
        value = measured[key]
        standing = target.standing(value)
        if value is not None and (why := caveat(figures, key)):
            standing = why
        judged[key] = {
            "what": target.what,
            "unit": target.unit,
            "now": None if value is None else round(float(value), 1),
            "must_reach": target.must,
            "aim": target.aim,
            "standing": standing,
        }
    return judged


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}".removesuffix(".0")


def table(judged: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        f"  {'figure':<52} {'now':>10} {'must reach':>12} {'aim':>12}  standing",
    ]
    for key, row in judged.items():
        target = TARGETS[key]
        now = "-" if row["now"] is None else f"{_number(row['now'])} {target.unit}"
        lines.append(
            f"  {target.what:<52} {now:>10} {target.bound(target.must):>12} "
            f"{target.bound(target.aim):>12}  {row['standing']}"
        )
    return lines
