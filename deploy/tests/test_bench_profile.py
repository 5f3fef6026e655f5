"""`bench --profile`: py-spy samples a real Python process from outside, and the summary says
where its CPU went — the package and the function that burn it, not the event loop above."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from visio_deploy.bench import profile

BUSY = textwrap.dedent(
    """
    import json, sys
    def encode_forever():
        payload = {"appointment": list(range(200)), "name": "Jeanne"}
        while True:
            json.dumps(payload)
    print("ready", flush=True)
    encode_forever()
    """
)


@pytest.fixture
def busy() -> Iterator[subprocess.Popen[str]]:
    child = subprocess.Popen([sys.executable, "-c", BUSY], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    yield child
    child.kill()
    child.wait()


def test_a_busy_process_is_seen_where_it_spends_its_cpu(
    busy: subprocess.Popen[str], tmp_path: Path
) -> None:
    profiles = asyncio.run(
        profile.record(lambda: {"encoder": busy.pid}, tmp_path, seconds=2, warm_up_s=0, rate=200)
    )
    [encoder] = profiles
    assert encoder.error is None and encoder.samples > 100
    # The raw stacks are kept for flame graphs: `frame;frame;… count` per line.
    raw = (tmp_path / "encoder.txt").read_text()
    assert "encode_forever" in raw
    # Nearly all of it inside encode_forever, most of it in json's own frames.
    packages = {name: (own, inside) for name, own, inside in encoder.by_package()}
    assert packages["json"][0] > encoder.samples / 2, packages
    assert any("encode_forever" in stack[-1] or any("encode_forever" in f for f in stack)
               for stack in encoder.stacks)  # fmt: skip
    summary = profile.table(profiles)
    assert summary.startswith(f"encoder: {encoder.samples:,} samples")
    assert "json" in summary.splitlines()[2]  # the package that burns the most comes first


def test_a_process_that_cannot_be_read_is_reported_not_fatal(tmp_path: Path) -> None:
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    [gone] = asyncio.run(
        profile.record(lambda: {"gone": ended.pid}, tmp_path, seconds=1, warm_up_s=0)
    )
    assert gone.error and gone.samples == 0
    assert profile.table([gone]) == f"gone: no samples ({gone.error})"


def test_a_frame_is_named_by_its_package_and_function() -> None:
    frame = "AsyncClient.send (httpx/_client.py:1629)"
    assert profile.package(frame) == "httpx"
    assert profile.function(frame) == "httpx/_client.py AsyncClient.send"
    assert profile.package("<module> (visio-rdv-meetings:10)") == "visio-rdv-meetings"
    parsed = profile.parse("a (x/y.py:1);b (json/encoder.py:2) 5\nmalformed\n", "p")
    assert parsed.samples == 5 and parsed.by_package()[0] == ("json", 5, 5)


def test_the_processes_are_those_running_after_the_warm_up(
    busy: subprocess.Popen[str], tmp_path: Path
) -> None:
    """A phase restarts services as it starts (the backlog phase does): the profile samples
    their new processes, not the pids they had when the phase began."""
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    current = {"encoder": ended.pid}

    async def restarted_during_the_warm_up() -> list[profile.Profile]:
        recording = asyncio.create_task(
            profile.record(lambda: dict(current), tmp_path, seconds=1, warm_up_s=0.5, rate=200)
        )
        await asyncio.sleep(0)  # one turn of the loop: the recording is in its warm-up
        current["encoder"] = busy.pid  # the service restarted, under a new pid
        return await recording

    [encoder] = asyncio.run(restarted_during_the_warm_up())
    assert encoder.error is None and encoder.samples > 0


def test_the_warm_up_counts_from_the_start_of_the_measure(
    busy: subprocess.Popen[str], tmp_path: Path
) -> None:
    """A backlog phase writes its requests, the services stopped, for longer than the warm-up:
    the processes are read once the phase has started measuring and the warm-up has passed."""
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    current = {"encoder": ended.pid}

    async def restarted_long_after_the_call() -> list[profile.Profile]:
        measuring = asyncio.Event()
        recording = asyncio.create_task(
            profile.record(
                lambda: dict(current), tmp_path, seconds=1, warm_up_s=0.2, rate=200,
                measuring=measuring,
            )
        )  # fmt: skip
        await asyncio.sleep(0.6)  # the phase is still loading its backlog, services stopped
        current["encoder"] = busy.pid  # the services start, under new pids
        measuring.set()
        return await recording

    [encoder] = asyncio.run(restarted_long_after_the_call())
    assert encoder.error is None and encoder.samples > 0
