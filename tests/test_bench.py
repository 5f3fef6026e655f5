"""`visio-rdv bench --smoke`: the command runs end to end on the real stack and reports every
figure it promises. A smoke run, not a benchmark: no figure here is judged for speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from visio_deploy.bench.commands import scratch_folder

pytestmark = pytest.mark.long  # whole stacks: handed out first (conftest.py)


def smoke(tmp_path: Path, *phases: str) -> tuple[subprocess.CompletedProcess[str], Any]:
    """`visio-rdv bench --smoke --only PHASES`, which must succeed: what it printed, and its
    figures."""
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "visio_deploy", "bench", "--smoke", "--only", *phases,
         "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done, json.loads(out.read_text())


def test_the_bench_command_reports_every_figure(tmp_path: Path) -> None:
    done, figures = smoke(tmp_path, "throughput", "latency")
    assert figures["baseline"]["produce_per_s"] > 0 and figures["baseline"]["consume_per_s"] > 0
    through = figures["phases"]["throughput"]
    # Every smoke appointment fully done, each on its own (meeting, email, confirmed, both
    # ledger records), none doubled.
    assert through["done"] == through["offered"] == 40
    assert through["progress"]["done"] == 40
    assert through["duplicates"] == 0
    assert set(through["progress"]) == {"meetings", "emails", "confirmed", "consent", "done"}
    cpu = through["cpu_ms_per_appointment"]
    every_process = {
        *("booking", "meetings", "notifications", "consent", "alerts", "tansu", "postgresql"),
        *("graph-emulator", "smtp-sink", "load generator (bench)"),
    }
    assert every_process <= set(cpu)
    # The run's own database was served by backends of its own, seen and counted.
    assert through["postgresql_backends"]["seen"] > 0 and cpu["postgresql"] > 0
    assert through["postgresql_backends"]["unreadable"] == 0
    groups = through["cpu_ms_per_appointment_by_group"]
    assert set(groups) == {"own", "fakes", "load generator", "not counted"}
    assert figures["headline"]["own_cpu_ms_per_appointment"] == groups["own"] > 0
    assert through["machine_cpu_s"]["busy_cpu_s"] > 0
    assert {"booking", "meetings", "notifications", "consent"} <= set(through["rss_peak_mb"])
    latency = figures["phases"]["latency"]
    assert latency["emails_timed"] == latency["offered"]
    assert latency["accepted_to_email_p99_ms"] is not None
    run = figures["run"]
    assert len(run["commit"]) == 40 and run["date"] and run["machine"]["cpus"]
    assert run["settings"]["smoke"] is True and run["settings"]["appointments"] == 40
    # The phases' stacks were made in memory where the machine has such a folder.
    memory = scratch_folder()
    assert run["settings"]["scratch"] == (str(memory) if memory is not None else None)
    assert set(figures["targets"]) == {"cpu", "throughput", "backlog_meetings",
                                       "backlog_notifications", "backlog_consent",
                                       "alone_meetings", "alone_notifications", "alone_consent",
                                       "booking_p99", "email_p99", "rss"}  # fmt: skip
    assert "HEADLINE:" in done.stdout and "targets of issue 20" in done.stdout
    assert "baseline (raw aiokafka" in done.stdout

    # The run compared with itself: every ratio is 1.
    out = tmp_path / "bench.json"  # where `smoke` had it write its figures
    compared = subprocess.run(
        [sys.executable, "-m", "visio_deploy", "bench", "--compare", str(out), str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert compared.returncode == 0, compared.stderr
    own = next(line for line in compared.stdout.splitlines() if "per appt.: own" in line)
    assert "×1.00" in own


def test_the_backlog_and_catch_up_phases_drain_every_service_and_report_each(
    tmp_path: Path,
) -> None:
    """The two phases issue 20's drain targets are read from, at smoke size: every queued
    appointment drained by meetings, notifications and consent (at once, then each alone),
    nothing sent twice, and each service's rate, CPU per event and memory reported."""
    _, figures = smoke(tmp_path, "backlog", "catch-up")
    services = ("meetings", "notifications", "consent")
    for name in ("backlog", "catch-up"):
        phase = figures["phases"][name]
        assert phase["done"] == phase["offered"] > 0, name
        assert phase["duplicates"] == 0 and phase["refused"] == {}, name
        assert all(phase[f"{service}_per_s"] > 0 for service in services), name
    backlog, alone = figures["phases"]["backlog"], figures["phases"]["catch-up"]
    assert backlog["drain_per_s"] == min(backlog[f"{service}_per_s"] for service in services)
    for service in services:
        assert alone[f"{service}_cpu_ms_per_event"] > 0 and alone[f"{service}_rss_peak_mb"] > 0
        assert figures["targets"][f"backlog_{service}"]["now"] == backlog[f"{service}_per_s"]
        assert figures["targets"][f"alone_{service}"]["now"] == alone[f"{service}_per_s"]
