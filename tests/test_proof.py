"""The proof runs, reduced for the suite: each brings up the real stack (`visio-rdv up`'s own
code) on the machine's TCP PostgreSQL through the fault proxy, and asserts the report's zeros.
`visio-rdv proof chaos --appointments 2000` and `visio-rdv proof inputs` are the full runs
(docs/guarantees.md). A relay that never takes a confirmation is in test_proof_relay.py, the
other builds broken on purpose in test_proof_broken_builds.py, hostile inputs, wrong callers
and a tampered ledger in test_proof_inputs.py: files of their own, because the suite's workers
share the files out, and one file of every proof made the slowest worker (the chaos story
alone takes minutes). Each test prints how long it took."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from visio_deploy.proof import fired
from visio_deploy.proof.chaos import ChaosOptions, run_chaos
from visio_deploy.proof.stack import SERVICES_TO_KILL

from .proof_support import assert_passed, timed

pytestmark = pytest.mark.long  # whole stacks: handed out first (conftest.py)


@pytest.mark.timeout(1200)  # 3-5 min alone, longer beside other workers: it waits out kills
def test_chaos_story_under_every_fault_ends_as_planned_appointment_by_appointment(
    tmp_path: Path,
) -> None:
    """Twenty-four appointments, their story played (reschedules, cancellations, withdrawals, links
    asked again, reminders falling due, meetings refused on purpose) under every fault class,
    each of which must fire; then each appointment judged against what the run did to it."""
    started = time.monotonic()
    options = ChaosOptions(
        appointments=24,  # every role of the story at least twice (one in ten each)
        seed=5,
        kill_every_s=8,
        chaos_min_s=4,
        # Each Graph class's rate. A run makes about 80 Graph calls: at 0.05, some class
        # fired 0 times in about one run in 15 (4 x 0.95^80); at 0.1, one in 1,000.
        graph_fault_rate=0.1,
        pg_cut_every_s=2,
        broker_cut_every_s=8,
        reminder_due_s=30,
        evidence=tmp_path,
        quiet=True,
    )
    report = run_chaos(options)
    timed("proof chaos, 40 appointments", started)
    assert_passed(report)
    fired_ = report.figures["faults fired, by class"]
    assert set(fired_) == set(fired.planned(options)) and all(fired_.values())
    assert {f"SIGKILL {s}" for s in SERVICES_TO_KILL} <= set(fired_)
    story = report.figures["story"]
    assert {"reschedule", "reschedule_twice", "cancel", "withdraw", "link_again"} <= set(story)
    assert {"reminder", "refused"} <= set(story)
    assert report.figures["statuses"]["meeting_failed"] == story["refused"]
    assert report.figures["outcome"].startswith("settled in")
    assert report.figures["late-email alerts to Cafs"] == 0
    # The run ends signed: a checkpoint covers every record it caused, and verify stands on it.
    assert report.figures["ledger signed up to seq"] >= 2 * options.appointments
    assert list(tmp_path.iterdir()) == []  # a passing run keeps nothing
