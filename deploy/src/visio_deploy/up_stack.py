"""The processes `visio-rdv up` started (visio_deploy.up): each one's command, to stop, kill,
restart or replicate it (the proofs do), and `say`, how `up` speaks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from visio_fakes.postgres import EmbeddedPostgres
from visio_fakes.processes import spawn, stop
from visio_runtime.local_stack import LocalStack

if TYPE_CHECKING:
    from visio_deploy.up import UpSettings


@dataclass
class Stack:
    settings: UpSettings
    processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    postgres: EmbeddedPostgres | None = None
    # Extra environment per process name, on top of what `bring_up` gives (the proof's faults).
    extra_env: dict[str, dict[str, str]] = field(default_factory=dict)
    # How each process was started, so the proof can SIGKILL one and start it again.
    commands: dict[str, tuple[list[str], dict[str, str]]] = field(default_factory=dict)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # var/stack.json once the stack is ready; removed first thing when it stops.
    recorded: LocalStack | None = None

    @property
    def logs(self) -> Path:
        return self.settings.var_dir / "log"

    def start(self, name: str, script: str, env: dict[str, str] | None = None) -> None:
        self.launch(name, [installed_script(script)], env)

    def launch(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        full_env = {**(env or {}), **self.extra_env.get(name, {})}
        self.commands[name] = (argv, full_env)
        self.processes.append((name, spawn(argv, env=full_env, log=self.logs / f"{name}.log")))

    def process(self, name: str) -> subprocess.Popen[bytes]:
        return next(process for known, process in self.processes if known == name)

    def kill(self, name: str) -> None:
        """SIGKILL the process (and its group): no shutdown code runs, as in a crash."""
        process = self.process(name)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(10)

    def stop_one(self, name: str) -> None:
        """SIGTERM one process and wait for it to end: its shutdown code runs."""
        stop(self.process(name))

    def replicate(self, name: str, replica: str, env: dict[str, str]) -> None:
        """Start one more copy of a process, as it was started, with `env` on top (its own
        HTTP port): the same consumer group, so the partitions are shared."""
        argv, first_env = self.commands[name]
        self.launch(replica, argv, {**first_env, **env})

    def restart(self, name: str) -> None:
        """Start a process again the way it was first started, in its place in the list."""
        argv, env = self.commands[name]
        index = next(i for i, (known, _) in enumerate(self.processes) if known == name)
        log = self.logs / f"{name}.log"
        self.processes[index] = (name, spawn(argv, env=env, log=log))

    def stop_all(self) -> None:
        if self.recorded is not None:
            self.recorded.remove()
            self.recorded = None
        for name, process in reversed(self.processes):
            say(f"stopping {name}")
            stop(process)
        self.processes.clear()
        if self.postgres is not None:
            say("stopping PostgreSQL")
            self.postgres.stop()
            self.postgres = None

    def check_alive(self) -> None:
        for name, process in self.processes:
            if process.poll() is not None:
                log = self.logs / f"{name}.log"
                raise RuntimeError(
                    f"{name} exited with code {process.returncode}; see {log}; it ends with:\n"
                    + last_lines(log)
                )


def last_lines(log: Path, count: int = 15) -> str:
    """The end of a process's log, for the error that says it stopped: a test's stack lives in
    a temporary folder gone by the time anyone reads the error."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(its log cannot be read: {exc})"
    return "\n".join(line[:500] for line in lines[-count:]) or "(its log is empty)"


def installed_script(name: str) -> str:
    """A console script of this environment, found beside its Python even if PATH lacks it."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def say(message: str) -> None:
    print(f"visio-rdv: {message}", flush=True)
