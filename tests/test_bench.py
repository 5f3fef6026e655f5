"""`visio-rdv bench --smoke`: the command runs end to end on the real stack and reports every
figure it promises. A smoke run, not a benchmark: no figure here is judged for speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_the_bench_command_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "visio_deploy", "bench", "--smoke", "--only", "throughput",
         "latency", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["baseline"]["produce_per_s"] > 0 and figures["baseline"]["consume_per_s"] > 0
    through = figures["phases"]["throughput"]
    # Every smoke appointment fully done (meeting, email, confirmed, consent), none doubled.
    assert through["done"] == through["offered"] == 40
    assert through["duplicates"] == 0
    assert set(through["progress"]) == {"meetings", "emails", "confirmed", "consent"}
    assert {"booking", "meetings", "notifications", "consent", "tansu", "postgresql"} <= set(
        through["cpu_ms_per_appointment"]
    )
    assert {"booking", "meetings", "notifications", "consent"} <= set(through["rss_peak_mb"])
    latency = figures["phases"]["latency"]
    assert latency["emails_timed"] == latency["offered"]
    assert latency["accepted_to_email_p99_ms"] is not None
    assert set(figures["targets"]) == {"throughput", "cpu", "booking_p99", "email_p99",
                                       "backlog", "rss"}  # fmt: skip
    assert "targets:" in done.stdout and "baseline (raw aiokafka" in done.stdout
