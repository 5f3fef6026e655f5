"""The README is a front door and the documentation stands alone: every relative link of the
README and of docs/ leads to a file of the repository, and the README leaves the repository only
for public documentation (never for a page outside it, such as a design note kept elsewhere)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# Links out of the repository the README may give: public documentation only.
PUBLIC_DOCUMENTATION = {"docs.astral.sh", "learn.microsoft.com", "www.rfc-editor.org"}
# Hosts that appear in examples (addresses of the local stack, example payloads), not as links.
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _pages() -> list[Path]:
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


def _links(page: Path) -> list[str]:
    text = page.read_text(encoding="utf-8")
    # Fenced code is an example, not a link.
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return _LINK.findall(text)


def test_the_readme_is_a_front_door_of_under_300_lines() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines < 300, f"README.md has {lines} lines: move the manual to docs/"


def test_every_relative_link_leads_to_a_file_of_the_repository() -> None:
    broken = []
    for page in _pages():
        for link in _links(page):
            if urlparse(link).scheme or link.startswith("#") or link.startswith("mailto:"):
                continue
            path = link.split("#", 1)[0]
            # A link starting with / is from the repository's root (as GitHub reads it).
            base = ROOT if path.startswith("/") else page.parent
            target = (base / path.lstrip("/")).resolve()
            if not target.exists() or ROOT not in target.parents:
                broken.append(f"{page.relative_to(ROOT)}: {link}")
    assert broken == []


def test_the_readme_leaves_the_repository_only_for_public_documentation() -> None:
    outside = [
        link
        for link in _links(README)
        if urlparse(link).scheme and urlparse(link).hostname not in PUBLIC_DOCUMENTATION
    ]
    assert outside == []


def test_nothing_points_outside_the_repository() -> None:
    """The project's design lives in docs/: no page or source names the notes kept beside the
    checkout (a design page, a style guide, the seed text) instead of the repository's copies."""
    outside = ["shared/" + name for name in ("DESIGN.md", "STYLE.md", "seed/")]
    offenders = []
    for path in ROOT.rglob("*"):
        if not path.is_file() or path.suffix not in {".md", ".py", ".toml", ".yml", ".json"}:
            continue
        parts = path.relative_to(ROOT).parts
        if parts[0] in {".venv", "var", ".git", "test-output"} or "node_modules" in parts:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        offenders += [f"{path.relative_to(ROOT)}: {name}" for name in outside if name in text]
    assert offenders == []


def test_the_checkers_see_a_broken_link_and_a_link_leaving_the_repository(tmp_path: Path) -> None:
    """Break it on purpose: the link pattern finds what the tests above would reject."""
    page = tmp_path / "page.md"
    page.write_text("[gone](nowhere.md) and [design](https://example.org/DESIGN.md)\n")
    assert _links(page) == ["nowhere.md", "https://example.org/DESIGN.md"]
    assert urlparse(_links(page)[1]).hostname not in PUBLIC_DOCUMENTATION
    assert not (page.parent / "nowhere.md").exists()
