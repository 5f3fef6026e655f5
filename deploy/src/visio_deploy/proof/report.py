"""A proof's figures: printed as a table, written as JSON so runs can be compared. `passed` is
the verdict: every figure named in `must_be_zero` is 0 and every check in `must_hold` holds."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Report:
    run: str
    figures: dict[str, Any] = field(default_factory=dict)
    must_be_zero: list[str] = field(default_factory=list)
    must_hold: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    evidence: Path | None = None  # where a failed run kept its logs, mail, state and report

    def zero(self, name: str, value: int) -> None:
        self.figures[name] = value
        self.must_be_zero.append(name)

    def holds(self, name: str, value: bool) -> None:
        self.figures[name] = value
        self.must_hold.append(name)

    @property
    def failures(self) -> list[str]:
        return [n for n in self.must_be_zero if self.figures[n] != 0] + [
            n for n in self.must_hold if self.figures[n] is not True
        ]

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "passed": self.passed,
            "failures": self.failures,
            "figures": self.figures,
            "notes": self.notes,
            "details": self.details,
            "evidence": None if self.evidence is None else str(self.evidence),
        }

    def table(self) -> str:
        width = max(len(name) for name in self.figures) + 2
        lines = [f"proof {self.run}", "-" * (width + 30)]
        for name, value in self.figures.items():
            mark = ""
            if name in self.must_be_zero or name in self.must_hold:
                mark = "  ok" if name not in self.failures else "  FAIL"
            shown = json.dumps(value) if isinstance(value, dict) else str(value)
            lines.append(f"{name:<{width}}{shown}{mark}")
        lines.append("-" * (width + 30))
        lines += [f"note: {note}" for note in self.notes]
        lines.append("PASSED" if self.passed else f"FAILED: {', '.join(self.failures)}")
        if self.evidence is not None:
            lines.append(f"evidence kept in {self.evidence} (README.txt says what is there)")
        return "\n".join(lines)

    def write(self, path: Path | None) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.as_dict(), indent=2, default=str) + "\n")
