"""Fault decisions a seed replays: each is a pure function of (seed, subject, operation, attempt),
never of the order in which requests happen to arrive.

The fakes (the Graph emulator, the SMTP sink) draw one number in [0, 1) per decision from a hash
of those four, so the n-th try of one appointment's confirmation meets the same fault in every
run with the same seed, whatever else the system was doing: a failing proof can say which
faults an appointment met and a test can replay them. `subject` is the appointment when the
request names it (a Message-ID, an extended property, an event of the appointment), else the
most specific thing it names.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import Counter
from collections.abc import Sequence
from threading import Lock

_SCALE = float(2**64)


def draw(seed: int, subject: str, operation: str, attempt: int) -> float:
    """A number in [0, 1), the same for the same four inputs on any machine."""
    text = f"{seed}\x1f{subject}\x1f{operation}\x1f{attempt}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big") / _SCALE


def pick(value: float, shares: Sequence[tuple[float, str]]) -> str | None:
    """Which fault a draw falls on: the shares laid end to end from 0; None past them."""
    for share, fault in shares:
        if value < share:
            return fault
        value -= share
    return None


def fresh_seed() -> int:
    """A seed for a run that was given none; logged and reported, so it can be replayed."""
    return secrets.randbelow(2**31)


class Attempts:
    """How many times each (subject, operation) was decided on: the attempt of the next one.
    Thread-safe (the sink decides in its own thread)."""

    def __init__(self) -> None:
        self._seen: Counter[tuple[str, str]] = Counter()
        self._lock = Lock()

    def next(self, subject: str, operation: str) -> int:
        with self._lock:
            self._seen[subject, operation] += 1
            return self._seen[subject, operation]
