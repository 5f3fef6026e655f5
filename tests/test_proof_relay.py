"""A relay that never takes a confirmation: the proof times out instead of passing, says where
each person's email is, alerts the Caf and keeps its evidence; and the fault proxy the proofs
put before PostgreSQL cuts live sessions. Apart from test_proof.py, whose chaos story takes a
worker for minutes (the suite's workers share the files out)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from visio_deploy.ops.whereabouts import NOWHERE
from visio_deploy.proof.chaos import ChaosOptions, run_chaos
from visio_deploy.proof.chaos_checks import PROMISE
from visio_deploy.proof.faultproxy import FaultProxy
from visio_deploy.proof.stack import server_url

from .proof_support import NO_FAULTS

pytestmark = pytest.mark.long  # whole stacks: handed out first (conftest.py)


def test_a_relay_that_never_takes_a_confirmation_times_out_alerts_and_keeps_evidence(
    tmp_path: Path,
) -> None:
    """The SMTP sink's faults left on, for every confirmation: the proof times out instead of
    passing, names where each person's email is (notifications waiting for a retry, the
    relay's 451), the alerts process tells the Caf (its email lands in the same sink), and
    the evidence stays in the folder the report names."""
    options = ChaosOptions(
        appointments=2,
        seed=16,
        **NO_FAULTS,
        story=False,
        permanent_faults=False,
        email_within_s=20,
        settle_timeout_s=45,
        evidence=tmp_path,
        env={
            "smtp-sink": {"SMTP_SINK_DEFER_MATCHING": r"\.confirmation@"},
            "alerts": {"VISIO_EMAIL_LATE_AFTER_MINUTES": "0.05", "ALERTS_SCAN_INTERVAL_S": "1"},
        },
        quiet=True,
    )
    report = run_chaos(options)

    assert not report.passed
    assert {"lost (no answer or not settled)", "settled before the deadline", PROMISE} <= set(
        report.failures
    )
    assert report.figures["outcome"].startswith("timed out after")
    assert report.figures["statuses"] == {"meeting_ready": 2}
    unsettled = report.details["unsettled"]
    assert len(unsettled) == 2
    for lines in unsettled.values():
        said = " | ".join(lines)
        assert "notifications: waiting for a retry until" in said
        assert "last: SMTP 451: 4.3.0 Temporary failure" in said
        assert NOWHERE not in said
    assert report.figures["unsettled: nowhere"] == 0

    # The evidence, in the folder the failure names.
    [kept] = list(tmp_path.iterdir())
    assert report.evidence == kept
    assert f"evidence kept in {kept}" in report.table()
    assert "postponed until" in (kept / "log" / "notifications.log").read_text()
    assert (kept / "database.dump").stat().st_size > 0
    events = json.loads((kept / "graph-emulator" / "events.json").read_text())["value"]
    assert {e["external_id"] for e in events} == set(unsettled)
    assert json.loads((kept / "report.json").read_text())["passed"] is False
    assert "--seed 16" in (kept / "README.txt").read_text()
    # The Caf's alerts, in the mail folder: one per person, none of them a confirmation.
    alerts = sorted(path.name for path in (kept / "mail").glob("alert.*.eml"))
    assert alerts == sorted(f"alert.{a}.email_late.r1@visio-rdv.caf.fr.eml" for a in unsettled)
    assert not list((kept / "mail").glob("*.confirmation@*"))
    assert report.figures["late-email alerts to Cafs"] == 2


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
