"""The end of a proof run: the ledger signed up to its head, then verified against that
signature, as an operator would (`visio-rdv consent checkpoint`, then `consent verify`).

Without it, "the ledger verifies" could be checked before the first checkpoint was signed, on
the chain alone, which a superuser who recomputes every hash passes too."""

from __future__ import annotations

from typing import Any

from visio_deploy.proof import observe
from visio_deploy.proof.report import Report
from visio_deploy.proof.stack import ProofStack

CHECK = "ledger signed to its head and verifies against it"


def sign_and_verify(proof: ProofStack, report: Report) -> dict[str, Any]:
    """Sign a checkpoint of the head (none is signed if the head has not moved since the
    last: the last covers it), verify, and add the check to `report`; returns the verdict."""
    signed = observe.consent_command(proof, "checkpoint")
    verdict = observe.consent_verify(proof)
    covered = (
        signed.returncode == 0
        and verdict.get("ok") is True
        and verdict["exit_status"] == 0
        and verdict.get("unsigned") == 0
        and verdict.get("signed_seq") == verdict.get("head_seq")
    )
    report.holds(CHECK, covered)
    report.figures["ledger signed up to seq"] = verdict.get("signed_seq")
    if not covered:
        report.details["ledger seal"] = {
            "checkpoint": (signed.stdout + signed.stderr)[-500:],
            "verify": {k: v for k, v in verdict.items() if k != "output"},
        }
    return verdict
