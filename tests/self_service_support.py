"""What the self-service browser test works with: appointments booked and confirmed on the
stack, the emails in the SMTP sink (and the links in their HTML part), PostgreSQL as the stack's
owner, a deadline to wait on, and Debian's Chromium driven by Playwright on a phone-sized
window."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from functools import partial
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, Playwright
from visio_deploy.proof.stack import ProofStack

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
# Debian's browser, as it is: no browser download is possible here, and none is needed.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 360, "height": 740}

_MONTHS = (
    "janvier", "février", "mars", "avril", "mai", "juin",
    "juillet", "août", "septembre", "octobre", "novembre", "décembre",
)  # fmt: skip
# The sink names a file after the Message-ID, which notifications derives from the dispatch:
# <appointment>.r<revision>.<kind>[-<offset>][-<request>]@<domain>
_MESSAGE_ID = re.compile(r"^<(?P<appointment>[0-9a-f-]{36})\.r(?P<revision>\d+)\.(?P<kind>[a-z_]+)")


def wait_for(condition: Callable[[], T], within: float, what: str) -> T:
    """Poll `condition` until it returns something truthy, and return that; fail past the
    deadline, saying what never happened."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")
        time.sleep(0.1)


def output_dir() -> Path:
    """Where the screenshots go: $VISIO_TEST_OUTPUT/self-service, else test-output/ at the
    repository's root (git-ignored). Emptied first, so it shows the last run only."""
    base = Path(os.environ.get("VISIO_TEST_OUTPUT") or REPO / "test-output")
    folder = base / "self-service"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def french_date(moment: datetime, zone: str) -> str:
    """`1er mars 2027`: written here again, so the page is checked against an independent
    spelling of the date rather than against its own code."""
    local = moment.astimezone(ZoneInfo(zone))
    day = "1er" if local.day == 1 else str(local.day)
    return f"{day} {_MONTHS[local.month - 1]} {local.year}"


# --- The SMTP sink ------------------------------------------------------------------------------


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.anchors: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href") or ""
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.anchors.append((" ".join("".join(self._text).split()), self._href))
            self._href = None


@dataclass(frozen=True)
class Mail:
    path: Path
    appointment_id: uuid.UUID
    revision: int
    kind: str
    message: EmailMessage

    @property
    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html",))
        assert part is not None, f"{self.path.name} has no HTML part"
        return str(part.get_content())

    def links(self) -> dict[str, str]:
        """The « Gérer mon rendez-vous » links of the HTML part, by page title."""
        parser = _Anchors()
        parser.feed(self.html)
        pages = ("Mon rendez-vous", "Enregistrement", "Mes consentements")
        found = {}
        for text, href in parser.anchors:
            title = next((page for page in pages if text.startswith(page)), None)
            if title is not None:
                found[title] = href
        return found


class Mailbox:
    """The sink's folder: one .eml per message accepted."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def all(self) -> list[Mail]:
        mails = []
        for path in sorted(self.folder.glob("*.eml")):
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            matched = _MESSAGE_ID.match(str(message["Message-ID"] or ""))
            if matched is None:  # an alert to the Caf's team, not a person's email
                continue
            mails.append(
                Mail(
                    path,
                    uuid.UUID(matched["appointment"]),
                    int(matched["revision"]),
                    matched["kind"],
                    message,
                )
            )
        return mails

    def of(self, appointment_id: uuid.UUID, kind: str) -> list[Mail]:
        return [m for m in self.all() if m.appointment_id == appointment_id and m.kind == kind]

    def wait(self, appointment_id: uuid.UUID, kind: str, within: float = 60) -> Mail:
        """The first `kind` email of the appointment, once it is in the sink."""
        mails = wait_for(
            lambda: self.of(appointment_id, kind), within, f"a {kind} email for {appointment_id}"
        )
        return mails[0]


# --- PostgreSQL, as the stack's owner -----------------------------------------------------------


def fetch(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    # In a thread of its own: Playwright's sync API keeps an event loop running in this one.
    with ThreadPoolExecutor(max_workers=1) as worker:
        return worker.submit(asyncio.run, run()).result()


def outbox_events(dsn: str, appointment_id: uuid.UUID, event_type: str) -> int:
    """How many events of this type booking published (or will) for the appointment."""
    rows = fetch(
        dsn,
        "SELECT count(*) AS n FROM booking.outbox WHERE key = $1 AND headers ->> 'event_type' = $2",
        str(appointment_id),
        event_type,
    )
    return int(rows[0]["n"])


# --- Appointments -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Booked:
    appointment_id: uuid.UUID
    address: str
    start: datetime
    join_url: str
    confirmation: Mail

    @property
    def links(self) -> dict[str, str]:
        return self.confirmation.links()


def book_confirmed(
    stack: ProofStack,
    mailbox: Mailbox,
    people: dict[str, tuple[str, int]],
    advisor: dict[str, str],
    subject: str,
    zone: str,
) -> dict[str, Booked]:
    """One appointment a week ahead for each person (name: first name, hour), booked through
    the API with recording authorised, all at once so the stack prepares them together; then
    each once confirmed, known to consent, and its confirmation in the sink."""
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    day = (datetime.now(UTC) + timedelta(days=7)).astimezone(ZoneInfo(zone))
    with httpx.Client(base_url=stack.url("booking"), headers=headers, trust_env=False) as api:
        cgu = api.get("/v1/cgu/current").json()["version"]
        asked: dict[str, tuple[uuid.UUID, str, datetime]] = {}
        for name, (first_name, hour) in people.items():
            start = day.replace(hour=hour, minute=0, second=0, microsecond=0)
            address = f"{first_name.lower().replace('è', 'e')}.{name}@example.fr"
            answer = api.post(
                "/v1/appointments",
                json={
                    "caf_code": "974",
                    "advisor": advisor,
                    "start": start.isoformat(),
                    "duration_minutes": 30,
                    "timezone": zone,
                    "subject": subject,
                    "user": {
                        "first_name": first_name,
                        "last_name": "Dupont",
                        "email": address,
                        "device": "smartphone",
                    },
                    "consent": {
                        "cgu_version": cgu,
                        "accepted_at": datetime.now(UTC).isoformat(),
                        "recording_authorised": True,
                    },
                },
            )
            assert answer.status_code == 202, answer.text
            asked[name] = (uuid.UUID(answer.json()["appointment_id"]), address, start)

        def confirmed(appointment_id: uuid.UUID) -> dict[str, Any] | None:
            view: dict[str, Any] = api.get(f"/v1/appointments/{appointment_id}").json()
            # « confirmed » (notifications' topic) may be recorded before the meeting's link.
            return view if view["status"] == "confirmed" and view["join_url"] else None

        def consent_knows(appointment_id: uuid.UUID) -> bool:
            query = (
                "SELECT 1 FROM consent.ledger WHERE appointment_id = $1 "
                "AND kind = 'recording_authorised'"
            )
            return bool(fetch(stack.owner_dsn, query, appointment_id))

        booked = {}
        for name, (appointment_id, address, start) in asked.items():
            view = wait_for(partial(confirmed, appointment_id), 90, f"{name} to be confirmed")
            wait_for(partial(consent_knows, appointment_id), 30, f"consent to know {name}'s")
            confirmation = mailbox.wait(appointment_id, "confirmation")
            booked[name] = Booked(appointment_id, address, start, view["join_url"], confirmation)
    return booked


# --- The browser --------------------------------------------------------------------------------


def require_chromium() -> None:
    """Fail (never skip) when the browser is not installed, saying how to install it."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} not found: the self-service pages are tested in Debian's Chromium. "
            "Install it with `apt-get install -y --no-install-recommends chromium "
            "chromium-driver` (what .ci/run does)."
        )


def launch_phone(playwright: Playwright, profile: Path) -> BrowserContext:
    """Debian's Chromium, headless, 360 × 740, on a fresh profile, JavaScript off."""
    require_chromium()
    return playwright.chromium.launch_persistent_context(
        str(profile),
        executable_path=str(CHROMIUM),
        headless=True,
        args=CHROMIUM_ARGS,
        viewport=PHONE,
        locale="fr-FR",
        accept_downloads=True,
        java_script_enabled=False,  # the pages work without it: every click here proves it
    )


@dataclass
class Screenshots:
    folder: Path
    taken: int = 0

    def take(self, page: Page, name: str) -> Path:
        """The whole page, top to bottom, as wide as the phone's window (what sticks out
        sideways is cut, as the phone's screen cuts it), numbered in the order taken."""
        assert page.viewport_size == PHONE
        self.taken += 1
        path = self.folder / f"{self.taken:02d}-{name}.png"
        height = page.evaluate("document.documentElement.scrollHeight")
        page.screenshot(
            path=str(path),
            full_page=True,
            clip={"x": 0, "y": 0, "width": PHONE["width"], "height": height},
        )
        return path


# What sticks out of the window, or of its own box, innermost first: what to fix when a page
# is too wide.
_OVERFLOWING = """() => {
    const out = el => el.getBoundingClientRect().right > window.innerWidth + 0.5
        || (el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).display !== 'inline');
    return Array.from(document.body.querySelectorAll('*'))
        .filter(out)
        .filter(el => !Array.from(el.querySelectorAll('*')).some(out))
        .slice(0, 5)
        .map(el => el.tagName.toLowerCase() + ': ' + el.textContent.trim().slice(0, 60));
}"""


def page_facts(page: Page) -> dict[str, Any]:
    """What every page must be: French, one h1, no script, and no sideways scrolling."""
    facts: dict[str, Any] = page.evaluate(
        """() => ({
            lang: document.documentElement.lang,
            h1: Array.from(document.querySelectorAll('h1')).map(h => h.textContent.trim()),
            scrollWidth: document.documentElement.scrollWidth,
            scripts: document.scripts.length,
        })"""
    )
    if facts["scrollWidth"] > PHONE["width"]:
        facts["overflowing"] = page.evaluate(_OVERFLOWING)
    return facts


def focused(page: Page) -> dict[str, Any]:
    """The element keyboard focus is on, and whether the focus ring shows."""
    info: dict[str, Any] = page.evaluate(
        """() => {
            const el = document.activeElement;
            const style = getComputedStyle(el);
            return {
                tag: el.tagName.toLowerCase(),
                text: (el.textContent || '').trim().replace(/\\s+/g, ' '),
                visible: el.matches(':focus-visible'),
                outline: style.outlineStyle,
                outlineWidth: parseFloat(style.outlineWidth),
            };
        }"""
    )
    return info
