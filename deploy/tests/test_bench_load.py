"""The bench's bookings: the throughput phase books 20,000 appointments by default, each with its
advisor and an hour that advisor has no other — booking refuses an overlap with 409."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from visio_deploy.bench import commands
from visio_deploy.bench.load import bodies
from visio_deploy.proof import bookings


def test_the_default_throughput_phase_books_twenty_thousand_apart() -> None:
    # The draw from the proof's few advisors used to run first for every body, whatever the
    # caller gave: past their 6,408 free hours it looped for ever (the bench hung at its start).
    made = bodies(20_000, 200, seed=1)
    assert len(made) == 20_000
    slots = {(body["advisor"]["id"], body["start"]) for body in made}
    assert len(slots) == 20_000


def test_the_proofs_advisors_run_out_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    taken = {(a, d, h) for a in bookings.ADVISORS for d in range(2, 91) for h in range(8, 17)}
    monkeypatch.setattr(bookings, "_TAKEN", taken)
    with pytest.raises(RuntimeError, match="every hour of the 8 advisors is taken"):
        bookings.booking_body(random.Random(3))
    # A caller that keeps its bodies apart itself still books.
    body = bookings.booking_body(
        random.Random(3), advisor={"id": "a", "display_name": "A"}, start="2030-01-07T09:00:00"
    )
    assert body["advisor"]["id"] == "a" and body["start"] == "2030-01-07T09:00:00"


def test_the_bench_makes_its_stacks_in_memory_where_the_machine_has_a_folder_for_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`scratch_folder`: /dev/shm on Linux (the SMTP sink's file per email costs the fakes
    little there); a machine without such a folder gets the system's temporary one (None)."""
    memory = tmp_path / "shm"
    memory.mkdir()
    monkeypatch.setattr(commands, "MEMORY_FOLDER", memory)
    assert commands.scratch_folder() == memory
    monkeypatch.setattr(commands, "MEMORY_FOLDER", tmp_path / "absent")
    assert commands.scratch_folder() is None
    (tmp_path / "a-file").write_text("")
    monkeypatch.setattr(commands, "MEMORY_FOLDER", tmp_path / "a-file")
    assert commands.scratch_folder() is None
