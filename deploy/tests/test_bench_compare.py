"""Two bench runs compared (`visio-rdv bench --compare before.json after.json`), and each figure
held against the targets of issue 20: from the JSON the bench writes, figures made up here so
the ratios are known (the bench's own runs are in tests/test_bench.py)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from visio_deploy.bench import provenance, report, targets
from visio_deploy.bench.backends import BackendFigures
from visio_deploy.bench.baseline import Baseline
from visio_deploy.bench.meters import Measured
from visio_deploy.bench.phases import PhaseResult
from visio_deploy.bench.probes import Progress

MB = 1024 * 1024


def throughput(done: int, seconds: float, cpu_s: dict[str, float]) -> PhaseResult:
    return PhaseResult(
        name="throughput",
        offered=done,
        done=done,
        seconds=seconds,
        progress=Progress(done, done, done, done, done),
        measured=Measured(
            cpu_s=cpu_s,
            rss_peak={"meetings": 90 * MB, "notifications": 120 * MB, "tansu": 300 * MB},
            backends=BackendFigures(cpu_s={}, seen=30, ended=1, missed=0, unreadable=0, each=[]),
            machine={"capacity_cpu_s": 200.0, "busy_cpu_s": 180.0, "watched_cpu_s": 170.0,
                     "others_cpu_s": 10.0},
        ),
        extra={"booking_api_p99_ms": 40.0},
    )  # fmt: skip


def latency(rate: float, p99_ms: float) -> PhaseResult:
    phase = throughput(100, 10, {"booking": 1.0})
    phase.name = "latency"
    phase.extra = {"offered_rate": rate, "graph_latency_ms": 100,
                   "booking_api_p99_ms": p99_ms, "accepted_to_email_p99_ms": 400.0}  # fmt: skip
    return phase


def run_figures(own_s: float, done: int, window: int, rate: float = 50.0) -> dict[str, Any]:
    """A run of `done` appointments in 100 s whose own processes used `own_s` CPU seconds."""
    cpu_s = {
        "meetings": own_s * 0.5,
        "notifications": own_s * 0.3,
        "postgresql": own_s * 0.2,
        "graph-emulator": 2.0,
        "smtp-sink": 1.0,
        "load generator (bench)": 0.5,
    }
    args = argparse.Namespace(appointments=20_000, window=window, smoke=False, json=Path("x"))
    machine = provenance.machine("the machine's server", "15.20", [0.1, 0.2, 0.3])
    return report.summary(
        Baseline(50_000, 30_000.0, 110_000.0),
        {"throughput": throughput(done, 100.0, cpu_s), "latency": latency(rate, 12.0)},
        provenance.run(args, datetime(2026, 12, 6, tzinfo=UTC), machine),
    )


def test_the_headline_is_the_cpu_of_our_processes_broker_and_database_alone() -> None:
    figures = run_figures(own_s=60.0, done=1_000, window=200)
    groups = figures["phases"]["throughput"]["cpu_ms_per_appointment_by_group"]
    assert groups == {"own": 60.0, "fakes": 3.0, "load generator": 0.5, "not counted": 0.0}
    assert figures["headline"]["own_cpu_ms_per_appointment"] == 60.0
    assert figures["run"]["settings"] == {"appointments": 20_000, "smoke": False, "window": 200}
    assert figures["run"]["date"] == "2026-12-06T00:00:00+00:00"


def test_each_target_says_where_the_run_stands() -> None:
    judged = targets.judge(run_figures(own_s=67.0, done=1_000, window=200))
    assert judged["cpu"]["now"] == 67.0
    assert judged["cpu"]["standing"] == "missed: ×6.7 from must reach"
    assert judged["throughput"]["standing"] == "missed: ×12.0 from must reach"
    assert judged["booking_p99"]["standing"] == "must reach: met; aim ×1.2 away"
    assert judged["email_p99"]["standing"] == "aim reached"
    assert judged["rss"]["now"] == 120.0  # a service's, not tansu's 300 MB
    assert judged["backlog_consent"]["standing"] == "not measured"

    better = targets.judge(run_figures(own_s=100.0, done=20_000, window=200, rate=15.0))
    assert better["cpu"]["standing"] == "must reach: met; aim ×1.7 away"
    assert better["throughput"]["standing"] == "must reach: met; aim ×2.0 away"
    assert better["booking_p99"]["standing"] == (
        "not comparable: measured at 15/s with Graph +100 ms"
    )


def test_each_service_catching_up_alone_is_judged_beside_the_backlog_drained_at_once() -> None:
    """The catch-up phase's drains (each service alone) are figures of their own: they never
    stand in for the backlog's, drained by the three at once."""
    figures = run_figures(own_s=60.0, done=1_000, window=200)
    figures["phases"]["catch-up"] = {
        "meetings_per_s": 900.0,
        "notifications_per_s": 450.0,
        "consent_per_s": 1_250.0,
    }
    judged = targets.judge(figures)
    assert judged["alone_meetings"]["standing"] == "must reach: met; aim ×1.1 away"
    assert judged["alone_notifications"]["now"] == 450.0
    assert judged["alone_notifications"]["standing"] == "must reach: met; aim ×2.2 away"
    assert judged["alone_consent"]["standing"] == "aim reached"
    assert judged["backlog_notifications"]["standing"] == "not measured"

    figures["phases"]["backlog"] = {"notifications_per_s": 120.0}
    judged = targets.judge(figures)
    assert judged["backlog_notifications"]["standing"] == "missed: ×2.5 from must reach"
    assert judged["alone_notifications"]["now"] == 450.0


def table_rows(table: str) -> dict[str, list[str]]:
    """The comparison's rows by their figure (its first 48 characters)."""
    return {line[:48].strip(): line[48:].split() for line in table.splitlines()}


def compare(before: Path, after: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "visio_deploy", "bench", "--compare", str(before), str(after)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_two_runs_are_compared_side_by_side_with_the_ratio_and_the_targets(
    tmp_path: Path,
) -> None:
    before, after = tmp_path / "before.json", tmp_path / "after.json"
    report.write(run_figures(own_s=60.0, done=2_000, window=200), before)
    report.write(run_figures(own_s=60.0, done=15_000, window=400), after)

    done = compare(before, after)

    assert done.returncode == 0, done.stderr
    rows = table_rows(done.stdout)
    # 60 CPU-s over 2,000 then 15,000 appointments: 30 then 4 ms each.
    assert rows["throughput CPU-ms per appt.: own"] == [
        "30.00", "4.00", "×0.13", "better", "≤", "10", "ms", "≤", "3", "ms"
    ]  # fmt: skip
    assert rows["throughput: appointments fully done /s"][:4] == [
        "20.00",
        "150.0",
        "×7.50",
        "better",
    ]
    assert rows["meetings"][:4] == ["15.00", "2.00", "×0.13", "better"]
    assert rows["throughput CPU-ms per appt.: fakes"][:4] == ["1.50", "0.20", "×0.13", "better"]
    assert "  ! setting window: 200 before, 400 after" in done.stdout.splitlines()
    assert not any(line.startswith("  ! machine") for line in done.stdout.splitlines())
    assert done.stdout.startswith("before: commit ")


def test_a_run_of_the_older_bench_is_compared_by_its_processes(tmp_path: Path) -> None:
    """Before format 2 a run had no CPU groups and said nothing of its commit or machine."""
    older = tmp_path / "older.json"
    older.write_text(json.dumps({
        "baseline": {"messages": 50_000, "produce_per_s": 29_088, "consume_per_s": 113_677},
        "phases": {"throughput": {"offered": 20_000, "done": 1_981, "done_per_s": 19.7,
                                  "cpu_ms_per_appointment": {"meetings": 23.2, "tansu": 5.6,
                                                             "smtp-sink": 5.9}}},
    }))  # fmt: skip
    newer = tmp_path / "newer.json"
    report.write(run_figures(own_s=60.0, done=15_000, window=200), newer)

    done = compare(older, newer)

    assert done.returncode == 0, done.stderr
    assert "before: written by an older bench (no commit, machine or settings)" in done.stdout
    assert table_rows(done.stdout)["throughput CPU-ms per appt.: own"][:2] == ["28.80", "4.00"]


def test_a_file_that_is_not_a_run_is_refused_with_what_is_wrong(tmp_path: Path) -> None:
    run = tmp_path / "run.json"
    report.write(run_figures(own_s=60.0, done=2_000, window=200), run)
    missing = compare(run, tmp_path / "nowhere.json")
    assert missing.returncode == 2
    assert "nowhere.json is not a file (a run's --json output)" in missing.stderr
    (tmp_path / "list.json").write_text("[1, 2]")
    wrong = compare(run, tmp_path / "list.json")
    assert wrong.returncode == 2
    assert "not a bench run's figures" in wrong.stderr
