"""Free ports for the stacks tests start side by side: from the kernel, or from a block of
their own (`VISIO_FREE_PORTS`, one per test worker), every pick a port nothing holds."""

from __future__ import annotations

import socket

import pytest
from visio_fakes import processes
from visio_fakes.processes import FREE_PORTS_SETTING, free_port


def test_ports_come_from_the_block_each_one_free_and_new(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as held:  # a port of the block someone already listens on
        held.bind(("127.0.0.1", 0))
        taken = held.getsockname()[1]
        held.listen()
        first = taken - 2
        block = f"{first}-{first + 15}"
        monkeypatch.setenv(FREE_PORTS_SETTING, block)
        monkeypatch.setattr(processes, "_cursors", {block: first})
        picked = [free_port() for _ in range(5)]
    assert all(first <= port <= first + 15 for port in picked)
    assert taken not in picked
    assert picked == sorted(set(picked))  # each pick moves on: all different


def test_a_block_with_nothing_free_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        taken = held.getsockname()[1]
        held.listen()
        monkeypatch.setenv(FREE_PORTS_SETTING, f"{taken}-{taken}")
        with pytest.raises(RuntimeError, match="no free port left"):
            free_port()


def test_without_a_block_the_kernel_picks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FREE_PORTS_SETTING, raising=False)
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # free indeed
