"""Defect switches: a service broken on purpose, one way at a time, so that a test can show a
proof failing on it (a proof that passes a broken system is worse than none).

`VISIO_DEFECT_<NAME>=1` turns one on. They exist for `tests/test_proof.py` alone, and are refused
outright when `VISIO_ENVIRONMENT=production`: production mode's settings check lists each one
set among the settings it refuses (`findings`, `visio_runtime.production`), `build_runtime`
refuses to build a service with one (`refuse_in_production`), and `on` raises rather than
answer.

The switches (each read where the defect lives):
- MEETINGS_REFUSE_ALL: meetings answers `MeetingFailed` to every appointment;
- EMAIL_TWICE: notifications sends the first email of each kind a second time, under a new
  Message-ID;
- DROP_REPLY: booking leaves out its first `BookingAccepted` reply to a partner;
- RESCHEDULE_NEW_MEETING: meetings makes a new meeting on a reschedule instead of moving it;
- SKIP_LEDGER_RECORD: consent leaves out the first recording choice it should append.
"""

from __future__ import annotations

import os
import threading

from visio_runtime.production import Finding

PREFIX = "VISIO_DEFECT_"
NAMES = (
    "MEETINGS_REFUSE_ALL",
    "EMAIL_TWICE",
    "DROP_REPLY",
    "RESCHEDULE_NEW_MEETING",
    "SKIP_LEDGER_RECORD",
)

_lock = threading.Lock()
_spent_pairs: set[tuple[str, str]] = set()


class DefectInProduction(RuntimeError):
    """A defect switch set where VISIO_ENVIRONMENT=production."""


def _production() -> bool:
    return os.environ.get("VISIO_ENVIRONMENT", "").strip().lower() == "production"


def switched_on() -> list[str]:
    """The VISIO_DEFECT_* settings present with a true value."""
    return sorted(
        name for name, value in os.environ.items() if name.startswith(PREFIX) and _true(value)
    )


def _true(value: str) -> bool:
    return value.strip().lower() not in ("", "0", "false", "no")


def findings() -> list[Finding]:
    """Each defect switch set, as production mode's settings check refuses it."""
    return [
        Finding(name, "a defect switch breaks the service on purpose, for the proofs' tests")
        for name in switched_on()
    ]


def refuse_in_production() -> None:
    """Raise, naming them, when any defect switch is set in production."""
    found = switched_on()
    if found and _production():
        raise DefectInProduction(
            f"{', '.join(found)}: defect switches break the service on purpose, for tests; "
            "they are refused when VISIO_ENVIRONMENT=production"
        )


def on(name: str) -> bool:
    """Whether defect `name` is switched on (never in production: raises there)."""
    if name not in NAMES:
        raise ValueError(f"unknown defect {name!r}; known: {', '.join(NAMES)}")
    # One look-up, not a walk through the environment: it is asked on every email and record.
    if not _true(os.environ.get(PREFIX + name, "")):
        return False
    refuse_in_production()
    return True


def once(name: str, key: str = "") -> bool:
    """True the first time defect `name` is asked about for `key` in this process, while on:
    for the defects that strike one message, not all of them."""
    if not on(name):
        return False
    with _lock:
        if (name, key) in _spent_pairs:
            return False
        _spent_pairs.add((name, key))
        return True
