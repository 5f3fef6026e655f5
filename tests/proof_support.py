"""What the proof tests share: how a report is judged and timed, and the switches of the runs
that break the system on purpose."""

from __future__ import annotations

import time
from typing import Any


def assert_passed(report: Any) -> None:
    """Passed, or the table and each failed check's first differences (the appointment and
    what it lacks), so a CI log says which person the run let down without the evidence."""
    said = report.details.get("first differences", {})
    named = "\n".join(f"{check}: {line}" for check, lines in said.items() for line in lines)
    assert report.passed, f"{report.table()}\n{named}"


def timed(name: str, started: float) -> None:
    """What each proof adds to the suite's time, printed (never asserted)."""
    print(f"\n{name}: {time.monotonic() - started:.0f} s")


# Every fault off: the runs that break the system another way.
NO_FAULTS: dict[str, float] = {
    "kill_every_s": 0,
    "graph_fault_rate": 0,
    "smtp_fail_share": 0,
    "smtp_drop_share": 0,
    "pg_cut_every_s": 0,
    "broker_cut_every_s": 0,
}


def broken(**defects: str) -> dict[str, dict[str, str]]:
    """Each defect switch in the environment of the service it breaks."""
    return {service: {f"VISIO_DEFECT_{name}": "1"} for name, service in defects.items()}
