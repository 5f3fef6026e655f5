"""`visio-rdv bench --profile DIR`: where each process of the stack spends its CPU while a phase
runs, sampled from outside by py-spy (no change to the process, no restart).

Each Python process of the stack is recorded for `seconds`, after `warm_up_s` (the phase's
first bookings and the consumer groups' joins are not what we want to see), at `rate` samples
per second, idle threads left out: a sample is CPU being spent. The raw stacks go to
`DIR/<phase>/<process>.txt` (one line per distinct stack and its count: what flamegraph.pl and
speedscope read), and the bench prints, per process, the share of its samples each package
takes — by the frame where the CPU was spent (`self`), and by whether the package appears
anywhere in the stack (`in stack`: a share of the time spent inside its calls) — and the
functions that take the most by themselves.

py-spy reads another process's memory: it needs ptrace rights over it (the same user and
`kernel.yama.ptrace_scope` 0 or 1 with the processes started by the bench, or root). A process
it cannot read is reported, not fatal."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# Not Python: py-spy cannot read it.
SKIP = ("tansu",)


@dataclass
class Profile:
    """One process's samples, counted by stack."""

    name: str
    stacks: Counter[tuple[str, ...]] = field(default_factory=Counter)
    error: str | None = None

    @property
    def samples(self) -> int:
        return sum(self.stacks.values())

    def by_package(self) -> list[tuple[str, int, int]]:
        """(package, samples spent in its own frames, samples with it anywhere in the stack),
        most self first."""
        own: Counter[str] = Counter()
        inside: Counter[str] = Counter()
        for stack, count in self.stacks.items():
            packages = [package(frame) for frame in stack]
            if packages:
                own[packages[-1]] += count
            for name in set(packages):
                inside[name] += count
        return [(name, own[name], inside[name]) for name, _ in own.most_common()]

    def top_functions(self, limit: int = 8) -> list[tuple[str, int]]:
        own: Counter[str] = Counter()
        for stack, count in self.stacks.items():
            if stack:
                own[function(stack[-1])] += count
        return own.most_common(limit)


def package(frame: str) -> str:
    """`AsyncClient.send (httpx/_client.py:1629)` → `httpx`; a script's frame
    (`<module> (visio-rdv-meetings:10)`) → the script's name."""
    where = frame.rpartition(" (")[2].rstrip(")")
    path = where.rpartition(":")[0] if ":" in where else where
    head = path.split("/", 1)[0] if "/" in path else path.removesuffix(".py")
    return head or "<unknown>"


def function(frame: str) -> str:
    """`AsyncClient.send (httpx/_client.py:1629)` → `httpx/_client.py AsyncClient.send`."""
    name, _, where = frame.rpartition(" (")
    return f"{where.rstrip(')').rpartition(':')[0]} {name}"


def parse(text: str, name: str) -> Profile:
    """py-spy's raw format: `frame;frame;…;frame count` per line, the innermost frame last."""
    profile = Profile(name)
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            profile.stacks[tuple(stack.split(";"))] += int(count)
    return profile


def py_spy() -> str | None:
    """py-spy from this environment (a dependency of the deploy package), else from PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.is_file() else shutil.which("py-spy")


async def record(
    processes: Callable[[], dict[str, int]],
    folder: Path,
    seconds: float,
    warm_up_s: float = 10.0,
    rate: int = 100,
    measuring: asyncio.Event | None = None,
) -> list[Profile]:
    """Record each process at once (they run together, so their profiles are of the same
    moment) and read back what each wrote. The warm-up counts from `measuring`, set when the
    phase starts measuring (a backlog phase first writes its 50,000 requests, services
    stopped), else from the call; `processes` is asked after it: a phase may restart services
    as it starts (the backlog phase does), and their new pids are the ones to sample."""
    if measuring is not None:
        await measuring.wait()
    await asyncio.sleep(warm_up_s)  # the phase's start is not what is measured
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    spy = py_spy()
    wanted = {n: pid for n, pid in processes().items() if not any(s in n for s in SKIP)}
    if spy is None:
        return [Profile(n, error="py-spy is not installed") for n in wanted]
    results = await asyncio.gather(
        *(_record_one(spy, name, pid, folder, seconds, rate) for name, pid in wanted.items())
    )
    return list(results)


async def _record_one(
    spy: str, name: str, pid: int, folder: Path, seconds: float, rate: int
) -> Profile:
    out = folder / f"{name}.txt"
    command = [spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
    command += ["--rate", str(rate), "--format", "raw", "--output", str(out), "--nonblocking"]
    child = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await child.communicate()
    written = await asyncio.to_thread(_read, out)
    if written is None:  # the process ended first, or py-spy may not read it
        lines = err.decode(errors="replace").strip().splitlines()
        return Profile(name, error=lines[-1] if lines else f"py-spy exited {child.returncode}")
    return parse(written, name)


def _read(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None


def table(profiles: list[Profile], packages: int = 8, functions: int = 6) -> str:
    """Per process: the packages where its CPU goes, then its heaviest functions."""
    lines: list[str] = []
    for profile in sorted(profiles, key=lambda p: p.name):
        if profile.error or not profile.samples:
            lines.append(f"{profile.name}: no samples ({profile.error or 'idle'})")
            continue
        total = profile.samples
        lines.append(f"{profile.name}: {total:,} samples")
        lines.append(f"  {'package':<28}{'self':>7}{'in stack':>10}")
        for name, own, inside in profile.by_package()[:packages]:
            lines.append(f"  {name:<28}{own / total:>7.0%}{inside / total:>10.0%}")
        for name, own in profile.top_functions(functions):
            lines.append(f"    {own / total:>4.0%}  {name}")
    return "\n".join(lines)
