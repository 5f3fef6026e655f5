"""What a failing proof leaves behind, in one folder its failure message names: the stack's
logs (`log/`), the SMTP sink's mail folder (`mail/`), the Graph emulator's state through its
control API (`graph-emulator/*.json`), the run's database (`database.dump`, pg_dump's custom
format: `pg_restore -d <db> database.dump`), the report (`report.json`) and how to replay the
run (`README.txt`). A passing run leaves nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from visio_deploy.proof.report import Report
    from visio_deploy.proof.stack import ProofStack

# What the emulator's control API shows, each kept as graph-emulator/<name>.json.
_EMULATOR_STATE = ("events", "online-meetings", "stats", "faults")


def run_directory(root: Path, name: str, seed: int) -> Path:
    """A fresh folder for one run: `<root>/<name>-seed<seed>-<UTC time>`."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    directory = (root / f"{name}-seed{seed}-{stamp}").resolve()
    directory.mkdir(parents=True, exist_ok=False)
    return directory


def keep_emulator_state(proof: ProofStack) -> list[str]:
    """Before the stack stops (the emulator holds its state in memory); what could not be
    read is said, not raised: the rest of the evidence matters more."""
    folder = proof.var / "graph-emulator"
    folder.mkdir(exist_ok=True)
    problems = []
    for name in _EMULATOR_STATE:
        try:
            state = proof.emulator("GET", f"/{name}")
        except Exception as exc:  # the emulator itself may be what failed
            problems.append(f"graph-emulator/{name}: {type(exc).__name__}: {exc}")
            continue
        (folder / f"{name}.json").write_text(json.dumps(state, indent=2) + "\n")
    return problems


def keep_database(owner_dsn: str, directory: Path) -> str:
    """pg_dump of the run's database, before it is dropped; what happened, in a line."""
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        return "database: not kept (no pg_dump on PATH)"
    target = directory / "database.dump"
    done = subprocess.run(  # noqa: S603 - pg_dump, with our own connection string
        [pg_dump, "--format=custom", f"--file={target}", owner_dsn],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        return f"database: pg_dump failed ({done.stderr.strip()[:300]})"
    return f"database: {target.name} (pg_restore it into an empty database)"


def write_readme(
    directory: Path,
    replay: str,
    report: Report | None,
    error: BaseException | None,
    notes: list[str],
) -> None:
    if report is not None:
        report.write(directory / "report.json")
    lines = [
        f"Evidence of a failed proof run ({datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC).",
        "",
        f"Replay: {replay}",
        "",
        "log/               each process's log (services, tansu, emulator, sink, alerts)",
        "mail/              every message the SMTP sink stored",
        "graph-emulator/    the emulator's events, online meetings, stats and faults",
        "report.json        the report, with where each unsettled appointment stood",
        *notes,
    ]
    if report is not None:
        lines += ["", report.table()]
    if error is not None:
        lines += ["", "The run stopped on an error:", *traceback.format_exception(error)]
    (directory / "README.txt").write_text("\n".join(lines) + "\n")


def discard(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
