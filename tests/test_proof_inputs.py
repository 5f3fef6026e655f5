"""The proofs of hostile inputs, wrong callers and a tampered ledger, reduced for the suite, on
the real stack (`visio-rdv up`'s own code): `visio-rdv proof inputs`, `proof access` and
`proof tamper` are the full runs (docs/guarantees.md). Each test prints how long it took."""

from __future__ import annotations

import time

import pytest
from visio_deploy.proof.access import run_access
from visio_deploy.proof.inputs import run_inputs
from visio_deploy.proof.stack import proof_stack
from visio_deploy.proof.tamper import run_tamper

from .proof_support import assert_passed, timed

pytestmark = pytest.mark.long  # whole stacks: handed out first (conftest.py)


def test_hostile_inputs_and_wrong_callers_on_one_stack() -> None:
    """`proof inputs` at reduced size, then `proof access` (Kafka included) on the same stack:
    one bring-up for both. Inputs first: it counts every appointment stored."""
    with proof_stack(seed=2, quiet=True, name="inputs-access") as proof:
        started = time.monotonic()
        report = run_inputs(100, seed_value=2, quiet=True, proof=proof)
        timed("proof inputs, 100 examples", started)
        assert_passed(report)
        assert report.figures["inputs tried"] == 100
        # Hostile records went to every topic a service reads, and were dead-lettered there.
        streams = {topic.split(".", 1)[1] for topic in report.figures["hostile records, by topic"]}
        assert streams == {
            "booking-requests.caf-portal.v1",
            "booking-requests.national-scheduler.v1",
            "appointments.v1",
            "meetings.v1",
            "notifications.v1",
            "consents.v1",
        }
        assert report.figures["dead letters read (every service's topic)"] > 100
        assert set(report.figures["hostile bodies to the APIs, answers"]) <= {400, 413, 422}

        started = time.monotonic()
        access = run_access(quiet=True, proof=proof)
        timed("proof access", started)
        assert_passed(access)
        assert access.figures["kafka, another system's appointment: 404"] is True
        claim = access.figures["kafka, a partner claiming another's name on its own topic: refused"]
        assert claim is True  # each partner writes its own topic; booking names it from there
        assert any("only the broker's ACLs" in note for note in access.notes)


def test_every_tampering_of_the_ledger_is_detected() -> None:
    report = run_tamper(quiet=True)
    assert_passed(report)
    assert sum(name.endswith("detected") for name in report.figures) == 6
    # The tail attacks leave a chain that verifies and a checkpoint that matches: the
    # ConsentRecorded hashes are what name them.
    cut = report.details["cut the tail after the last checkpoint"]
    assert "records appended after the newest checkpoint" in cut["reason"]
    rewritten = report.details["rewrite a tail record with recomputed hashes"]
    assert "does not have the hash ConsentRecorded" in rewritten["reason"]
