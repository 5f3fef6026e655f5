"""The chaos proof against builds broken on purpose (defect switches, `visio_runtime.defects`):
each run fails, naming what broke — a meetings service refusing every appointment; emails sent
twice under new Message-IDs, a partner's reply dropped, a reschedule making a new meeting, a
ledger record skipped, a planned fault class never injected. A file of its own so the suite's
workers run it beside the passing proofs. Each test prints how long it took."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from visio_deploy.proof import fired, verdict
from visio_deploy.proof.chaos import ChaosOptions, run_chaos

from .proof_support import NO_FAULTS, broken, timed

pytestmark = pytest.mark.long  # whole stacks: handed out first (conftest.py)


def test_a_meetings_service_refusing_every_appointment_fails_the_chaos_proof(
    tmp_path: Path,
) -> None:
    """Before: 100 x meeting_failed passed as "lost 0". A failed ending with no permanent fault
    injected on purpose fails the run, and names each appointment."""
    started = time.monotonic()
    options = ChaosOptions(
        appointments=8,
        seed=7,
        **NO_FAULTS,
        permanent_faults=False,
        step_timeout_s=30,
        settle_timeout_s=10,
        evidence=tmp_path,
        env=broken(MEETINGS_REFUSE_ALL="meetings"),
        quiet=True,
    )
    report = run_chaos(options)
    timed("proof chaos, a broken meetings service", started)

    assert not report.passed
    assert {verdict.FAILED_ENDING, verdict.STATUS} <= set(report.failures)
    assert report.figures[verdict.FAILED_ENDING] == 8
    assert report.figures["statuses"] == {"meeting_failed": 8}
    named = report.details["first differences"][verdict.FAILED_ENDING]
    assert all("meeting_failed, though every fault was transient" in line for line in named)


@pytest.mark.timeout(900)  # 2-4 min alone; it waits out steps that never come, by design
def test_broken_builds_fail_the_chaos_proof_each_named(tmp_path: Path) -> None:
    """Several defects in one stack, each striking its own appointments, each named by its own
    check: one email of each kind sent twice under a new Message-ID, one partner reply dropped,
    a reschedule that makes a new meeting, one ledger record skipped — and a planned fault
    class (Graph's 503) whose injection is left off."""
    started = time.monotonic()
    options = ChaosOptions(
        appointments=10,
        seed=3,
        **(NO_FAULTS | {"graph_fault_rate": 0.06}),
        reminder_due_s=20,
        step_timeout_s=40,
        reply_within_s=15,
        # A broken build never settles: this is how long its reminders get to fall due and go
        # out twice (20 s after booking) before the verdict, on a loaded machine too.
        settle_timeout_s=40,
        broken_fault="graph 503",
        evidence=tmp_path,
        env={
            **broken(EMAIL_TWICE="notifications", DROP_REPLY="booking"),
            "meetings": {"VISIO_DEFECT_RESCHEDULE_NEW_MEETING": "1"},
            "consent": {"VISIO_DEFECT_SKIP_LEDGER_RECORD": "1"},
        },
        quiet=True,
    )
    report = run_chaos(options)
    timed("proof chaos, four defects and a fault class off", started)

    assert not report.passed
    said = report.details["first differences"]
    # One email of each kind, twice: every kind the story sends is named.
    twice = " | ".join(said[verdict.EMAILS])
    # The defect doubles the first email of each kind a notifications process sends. These
    # three are sent during every story; the reminder and the refusal are sent late in the run
    # (the reminder when it falls due, the refusal after Graph's retries), so on a loaded
    # machine they may come after the verdict: named when they were doubled, as every kind is.
    for kind in ("confirmation", "cancellation", "link_resent"):
        assert f"{kind} r" in twice, (kind, twice)
    doubled = [line for line in said[verdict.EMAILS] if "2 distinct, owed 1" in line]
    assert len(doubled) >= 3, doubled
    # The reply dropped: one request, named, without its acceptance on the partner's topic.
    [dropped] = said[verdict.REPLIES]
    assert "0 acceptance(s)" in dropped
    # The reschedule that made a second meeting.
    assert any("2 live events, expected exactly one" in x for x in said[verdict.MEETING])
    # The ledger record skipped: one appointment, one record short.
    [skipped] = said[verdict.LEDGER]
    assert "owed" in skipped
    # The fault class left off, named.
    assert "graph 503" in report.details["fault classes planned that never fired"]
    assert report.figures["faults fired, by class"]["graph 503"] == 0
    assert {verdict.EMAILS, verdict.REPLIES, verdict.MEETING, verdict.LEDGER} <= set(
        report.failures
    )
    assert fired.NEVER_FIRED in report.failures
