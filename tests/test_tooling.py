"""The commit hooks run what CI runs before the tests, so a commit that passes them does not fail
CI's first steps; and mypy is strict on every package, not on one."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _ci_checks() -> list[str]:
    """The `uv run …` lines of .ci/run before the test command."""
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if re.match(r"\s*uv run (ruff|mypy)", line)]


def _hooks() -> list[str]:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    return [hook["entry"] for repo in config["repos"] for hook in repo["hooks"]]


def test_the_commit_hooks_run_every_check_ci_runs_before_the_tests() -> None:
    checks = _ci_checks()
    assert len(checks) >= 3, checks  # ruff check, ruff format --check, mypy
    missing = [check for check in checks if check not in _hooks()]
    assert missing == []


def test_mypy_is_strict_on_every_package() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    config = pyproject["tool"]["mypy"]
    assert config["strict"] is True
    assert not any(o.get("strict") is False for o in config.get("overrides", []))
    members = pyproject["tool"]["uv"]["workspace"]["members"]
    sources = [p / "src" for pattern in members for p in ROOT.glob(pattern) if (p / "src").is_dir()]
    checked = [ROOT / entry for entry in config["files"]]
    unchecked = [
        str(src.relative_to(ROOT))
        for src in sources
        if not any(c == src or c in src.parents for c in checked)
    ]
    assert len(sources) >= 6 and unchecked == []
