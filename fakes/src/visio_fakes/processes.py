"""Child processes that die with their parent: `up` and the tests start brokers, emulators and
services; none of them may outlive the process that started it, even if that one is SIGKILLed."""

from __future__ import annotations

import ctypes
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

_PR_SET_PDEATHSIG = 1


def _death_signal() -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to SIGTERM the child when its parent dies.

    libc is loaded here, before the fork, so the hook itself only makes one system call.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return hook


def spawn(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    out: IO[Any] | int = subprocess.DEVNULL
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        out = log.open("ab")
    return subprocess.Popen(  # noqa: S603 - argv is ours
        list(argv),
        env={**os.environ, **(env or {})},
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
        preexec_fn=_death_signal(),
        process_group=0,  # its own group, so a stop reaches the child's children too
    )


def stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM the child's process group, then SIGKILL whatever is still there."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(5)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(
    host: str, port: int, timeout: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process {process.args!r} exited with {process.returncode}")
        time.sleep(0.1)
    raise TimeoutError(f"nothing answered on {host}:{port} within {timeout:.0f}s")


# "first-last": where `free_port` picks, instead of the kernel's ephemeral range. Test workers
# running stacks side by side each get a block of their own (conftest.py): a port one stack has
# picked but not yet bound can then be picked by no other stack, nor taken by a connection's
# local port (those come from the ephemeral range, above every block).
FREE_PORTS_SETTING = "VISIO_FREE_PORTS"
_cursors: dict[str, int] = {}


def free_port() -> int:
    """A port nothing on 127.0.0.1 holds now: the kernel's pick, or the next one in the block
    `VISIO_FREE_PORTS` names (each pick moves on, so a stack's ports are all different)."""
    block = os.environ.get(FREE_PORTS_SETTING)
    if not block:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    first, last = (int(bound) for bound in block.split("-"))
    size = last - first + 1
    start = _cursors.get(block, first + random.randrange(size))
    for step in range(size):
        port = first + (start - first + step) % size
        if _bindable(port):
            _cursors[block] = port + 1
            return port
    raise RuntimeError(f"no free port left in {FREE_PORTS_SETTING}={block}")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
