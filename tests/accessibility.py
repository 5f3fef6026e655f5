"""Accessibility checked, not assumed: axe-core (Deque's engine, the one the RGAA's own tools and
most audits start from) run in the real browser on every page state and every email the tests
reach, at a phone's width and a desktop's, with the WCAG 2.1 A and AA rules; and the keyboard
taken through every page, each stop showing where the focus is.

axe-core comes from the `axe-playwright-python` wheel, which carries axe.min.js (we use the file,
not its wrapper). It needs JavaScript; the person's pages have none and are opened with it off.
So each page's HTML, as the phone received it, is laid out again in a context with JavaScript
on (the pages are self-contained: inline styles, no external resource, so the layout is the
same) and checked there. What a machine cannot judge — whether a text is clear, whether an
alternative says the right thing — is not claimed: the « Déclaration d'accessibilité » says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from playwright.sync_api import Browser, Page

AXE_JS = resources.files("axe_playwright_python").joinpath("axe.min.js").read_text(encoding="utf-8")
WCAG_21_A_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
WIDTHS = {"phone": {"width": 360, "height": 740}, "desktop": {"width": 1280, "height": 800}}

_RUN = """async (tags) => {
    const result = await axe.run(document, {runOnly: {type: 'tag', values: tags},
                                            resultTypes: ['violations']});
    return result.violations.map(v => ({
        id: v.id, impact: v.impact, help: v.help,
        nodes: v.nodes.slice(0, 3).map(n => n.target.join(' ')),
    }));
}"""

# Every element the keyboard should stop on, in the order Tab takes them.
_FOCUSABLE = """() => Array.from(document.querySelectorAll(
    'a[href], button:not([disabled]), input:not([disabled]):not([type=hidden]), ' +
    'select:not([disabled]), textarea:not([disabled]), summary, [tabindex]:not([tabindex="-1"])'
)).filter(el => el.getClientRects().length > 0 || el.classList.contains('skip')).length"""

_FOCUS_NOW = """() => {
    const el = document.activeElement;
    if (!el || el === document.body) return null;
    const style = getComputedStyle(el);
    return {tag: el.tagName.toLowerCase(), text: (el.textContent || el.value || '').trim()
            .replace(/\\s+/g, ' ').slice(0, 60), visible: el.matches(':focus-visible'),
            outline: style.outlineStyle, width: parseFloat(style.outlineWidth)};
}"""


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """The WCAG 2.1 A and AA violations axe-core finds on the page as it is now."""
    page.evaluate(AXE_JS)
    violations: list[dict[str, Any]] = page.evaluate(_RUN, WCAG_21_A_AA)
    return violations


def keyboard_stops(page: Page) -> tuple[int, list[dict[str, Any]]]:
    """Tab through the page from its top: how many elements should take the focus, and each
    stop the keyboard made (until the focus came back round or left the page)."""
    expected: int = page.evaluate(_FOCUSABLE)
    stops: list[dict[str, Any]] = []
    for _ in range(expected + 2):
        page.keyboard.press("Tab")
        now = page.evaluate(_FOCUS_NOW)
        if now is None or (stops and now == stops[0]):
            break
        stops.append(now)
    return expected, stops


@dataclass
class AccessibilityCheck:
    """Checks each distinct page (by what it is: its title and h1) once per width, however many
    times the tests open it."""

    browser: Browser
    seen: set[tuple[str, str]] = field(default_factory=set)
    checked: list[str] = field(default_factory=list)

    def html(self, html: str, where: str, keyboard: bool = True) -> None:
        for width_name, viewport in WIDTHS.items():
            if (where, width_name) in self.seen:
                continue
            self.seen.add((where, width_name))
            context = self.browser.new_context(
                viewport=viewport, locale="fr-FR", java_script_enabled=True
            )
            try:
                page = context.new_page()
                page.set_content(html, wait_until="load")
                problems = [
                    f"{v['id']} ({v['impact']}): {v['help']} — {v['nodes']}"
                    for v in axe_violations(page)
                ]
                assert problems == [], f"{where} at {width_name} width:\n" + "\n".join(problems)
                if keyboard:
                    expected, stops = keyboard_stops(page)
                    hidden = [s for s in stops if not (s["visible"] and s["outline"] == "solid")]
                    assert hidden == [], f"{where}: focus not shown on {hidden}"
                    assert len(stops) == expected, (
                        f"{where}: the keyboard reached {len(stops)} of {expected}: {stops}"
                    )
                self.checked.append(f"{where} @ {width_name}")
            finally:
                context.close()

    def page(self, page: Page) -> None:
        """The page the phone shows now, checked under its title."""
        self.html(page.content(), page.title())
