"""The proof runs, reduced for the suite: each brings up the real stack (`visio-rdv up`'s own
code) on the machine's TCP PostgreSQL through the fault proxy, and asserts the report's zeros.
`visio-rdv proof chaos --appointments 2000` and `visio-rdv proof inputs` are the full runs."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import asyncpg
import pytest
from visio_deploy.proof.chaos import ChaosOptions, run_chaos
from visio_deploy.proof.faultproxy import FaultProxy
from visio_deploy.proof.inputs import run_inputs
from visio_deploy.proof.stack import server_url
from visio_deploy.proof.tamper import run_tamper


def _assert_passed(report: object) -> None:
    assert report.passed, report.table()  # type: ignore[attr-defined]


def test_chaos_loses_nothing_and_doubles_nothing() -> None:
    options = ChaosOptions(
        appointments=10,
        seed=5,
        kill_every_s=4,
        chaos_min_s=4,
        graph_fault_rate=0.05,
        pg_cut_every_s=2,
        quiet=True,
    )
    report = run_chaos(options)
    _assert_passed(report)
    assert sum(report.figures["kills (SIGKILL + restart)"].values()) >= 1
    assert report.figures["lost (no answer or not settled)"] == 0


def test_hostile_inputs_get_clear_answers_and_break_nothing() -> None:
    report = run_inputs(100, seed_value=2, quiet=True)
    _assert_passed(report)
    assert report.figures["inputs tried"] == 100
    # Hostile records went to every topic a service reads, and were dead-lettered there.
    streams = {topic.split(".", 1)[1] for topic in report.figures["hostile records, by topic"]}
    assert streams == {
        "booking-requests.v1",
        "appointments.v1",
        "meetings.v1",
        "notifications.v1",
        "consents.v1",
    }
    assert report.figures["dead letters read (every service's topic)"] > 100
    assert set(report.figures["hostile bodies to the APIs, answers"]) <= {400, 413, 422}


def test_every_tampering_of_the_ledger_is_detected() -> None:
    report = run_tamper(quiet=True)
    _assert_passed(report)
    assert sum(name.endswith("detected") for name in report.figures) == 4


def test_the_fault_proxy_forwards_and_cuts() -> None:
    """A cut kills a live PostgreSQL session: the client sees its connection die."""
    target = urlsplit(server_url())
    assert target.hostname and target.port, "the proof needs a TCP PostgreSQL"
    proxy = FaultProxy(target.hostname, target.port, mean_cut_interval_s=0.05)
    port = proxy.start()
    proxied = server_url().replace(f"{target.hostname}:{target.port}", f"127.0.0.1:{port}")
    try:

        async def session() -> None:
            conn = await asyncpg.connect(proxied)
            assert await conn.fetchval("SELECT 1") == 1
            proxy.cutting = True
            deadline = time.monotonic() + 10
            with pytest.raises((ConnectionError, asyncpg.PostgresError, OSError)):
                while time.monotonic() < deadline:
                    await conn.fetchval("SELECT 1")
            conn.terminate()

        asyncio.run(session())
        assert proxy.cuts >= 1
    finally:
        proxy.stop()
