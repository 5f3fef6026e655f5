"""What the proof tests share: how a report is judged and timed, and the switches of the runs
that break the system on purpose."""

from __future__ import annotations

import time


def assert_passed(report: object) -> None:
    assert report.passed, report.table()  # type: ignore[attr-defined]


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
