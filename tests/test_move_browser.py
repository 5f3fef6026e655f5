"""« Changer de créneau » end to end, in a real browser (Debian's Chromium through Playwright,
360 px wide, JavaScript off, axe-core on every page state), on the whole stack (`visio-rdv up`'s
processes, a real tansu broker, a fresh database, the Graph emulator, the SMTP sink):

- a partner (national-scheduler) books over Kafka; the person opens « Mon rendez-vous » from
  the confirmation email, asks to move, and the page says what happens next; the partner reads
  `reschedule_requested` with the preferences on its own reply topic; then the partner
  reschedules through the normal path and the person gets the update email with the same
  Teams link, the advisor's event moved in the emulator;
- for an appointment booked over HTTP, the Caf's team gets the email instead (its address is
  the stack's NOTIFICATIONS_CAF_TEAM_ADDRESS), with the person's first name and initial only.

The page helpers (open_page, submit: French, one h1, no script, no sideways scrolling, axe) and
the browser fixtures are the self-service browser test's."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Page, Playwright, expect, sync_playwright
from visio_deploy.proof.stack import ProofStack, proof_stack
from visio_runtime.settings import ServiceSettings
from visio_runtime.topic_reader import producer, read_topics
from visio_shared import Topics, current_cgu

from .self_service_support import (
    REPO,
    Booked,
    Mail,
    Mailbox,
    Screenshots,
    _Anchors,
    book_confirmed,
    fetch,
    wait_for,
)
from .test_self_service_browser import (
    accessibility,
    axe_browser,
    browser,
    chromium,
    open_page,
    page,
    submit,
)

# The self-service test's fixtures (Chromium at 360 px without JavaScript, axe-core), which
# pytest finds here by name.
SHARED_FIXTURES = (accessibility, axe_browser, browser, chromium, page)
ZONE = "Indian/Reunion"
ADVISOR = {"id": "0b7e4d2a-1c3f-4e5a-8d9b-6a2c1f0e3d44", "display_name": "Karim Benali"}
SUBJECT = "Prime d'activité"
PARTNER = "national-scheduler"
TEAM = "visio-equipe-974@caf.example"
FROM_DAY = (datetime.now(UTC) + timedelta(days=9)).date()


@pytest.fixture(scope="module")
def stack(postgres_url: str) -> Iterator[ProofStack]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATABASE_URL", postgres_url)
        team = {"notifications": {"NOTIFICATIONS_CAF_TEAM_ADDRESS": TEAM}}
        with proof_stack(seed=24, quiet=True, faults=False, name="move", env=team) as running:
            yield running


@pytest.fixture(scope="module")
def mailbox(stack: ProofStack) -> Mailbox:
    return Mailbox(stack.var / "mail")


def join_links(mail: Mail) -> set[str]:
    """The Teams links of an email's HTML part (hrefs, unescaped)."""
    parser = _Anchors()
    parser.feed(mail.html)
    return {href for _, href in parser.anchors if href.startswith("https://teams.microsoft.com/")}


def _run(coroutine: Any) -> Any:
    """In a thread of its own: Playwright's sync API keeps an event loop running in this one."""
    with ThreadPoolExecutor(max_workers=1) as worker:
        return worker.submit(asyncio.run, coroutine).result()


def _kafka(stack: ProofStack) -> ServiceSettings:
    return ServiceSettings(kafka_bootstrap_servers=stack.bootstrap)


def send_request(stack: ProofStack, request: dict[str, Any], key: str) -> None:
    """What the partner writes on its own request topic."""
    topic = Topics(stack.settings.topic_prefix).partner_requests(PARTNER)

    async def send() -> None:
        async with producer(_kafka(stack)) as kafka:
            await kafka.send_and_wait(topic, json.dumps(request).encode(), key=key.encode())

    _run(send())


def partner_replies(stack: ProofStack) -> list[dict[str, Any]]:
    """Everything on the partner's reply topic, read as the partner reads it."""
    topic = Topics(stack.settings.topic_prefix).partner_replies(PARTNER)
    records = _run(read_topics(_kafka(stack), [topic]))
    return [json.loads(record.value) for record in records]


def _start(days: int, hour: int) -> datetime:
    day = (datetime.now(UTC) + timedelta(days=days)).astimezone(ZoneInfo(ZONE))
    return day.replace(hour=hour, minute=0, second=0, microsecond=0)


def book_over_kafka(stack: ProofStack, mailbox: Mailbox, first_name: str) -> Booked:
    """The partner's BookAppointment, confirmed: its email in the sink, its meeting made."""
    address = f"{first_name.lower()}.partenaire@example.fr"
    start = _start(8, 11)
    request_id = f"move-{uuid.uuid4().hex[:12]}"
    payload = {
        "caf_code": "974",
        "advisor": ADVISOR,
        "start": start.isoformat(),
        "duration_minutes": 30,
        "timezone": ZONE,
        "subject": SUBJECT,
        "user": {
            "first_name": first_name,
            "last_name": "Payet",
            "email": address,
            "device": "smartphone",
        },
        "consent": {
            "cgu_version": current_cgu().version,
            "accepted_at": datetime.now(UTC).isoformat(),
            "recording_authorised": False,
        },
    }
    send_request(
        stack,
        {"request_id": request_id, "request_type": "BookAppointment", "payload": payload},
        request_id,
    )
    query = (
        "SELECT appointment_id, join_url FROM booking.appointments "
        "WHERE email = $1 AND status = 'confirmed' AND join_url IS NOT NULL"
    )
    # « confirmed » (notifications' topic) may be recorded before the link (meetings' topic).
    [row] = wait_for(lambda: fetch(stack.owner_dsn, query, address), 120, "the partner's booking")
    confirmation = mailbox.wait(row["appointment_id"], "confirmation")
    return Booked(row["appointment_id"], address, start, row["join_url"], confirmation)


@pytest.fixture(scope="module")
def booked(stack: ProofStack, mailbox: Mailbox) -> dict[str, Booked]:
    over_http = book_confirmed(stack, mailbox, {"http": ("Lucie", 10)}, ADVISOR, SUBJECT, ZONE)
    return {"partner": book_over_kafka(stack, mailbox, "Nadia"), **over_http}


@pytest.fixture(scope="module")
def playwright(booked: dict[str, Booked]) -> Iterator[Playwright]:
    """After the stack and the bookings (Playwright's loop would stop theirs)."""
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="module")
def shots() -> Screenshots:
    """Beside the self-service test's: test-output/move/ (or $VISIO_TEST_OUTPUT/move/)."""
    folder = Path(os.environ.get("VISIO_TEST_OUTPUT") or REPO / "test-output") / "move"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return Screenshots(folder)


def ask_to_move(page: Page, mine: Booked, shots: Screenshots, name: str) -> None:
    """From the confirmation email's link: « Changer de créneau », a first try with nothing
    ticked (refused, said beside the fields), then days, a time and a message."""
    open_page(page, mine.links["Mon rendez-vous"])
    page.get_by_role("link", name="Changer de créneau").click()
    open_page(page, page.url)  # the form itself: labelled fields, no script, axe at 360 px
    expect(page.locator("h2#changer")).to_have_text("Changer de créneau")
    page.get_by_label("Un message pour votre Caf").fill("Plutôt en fin de semaine, merci.")
    submit(page, "Envoyer ma demande", status=422)
    expect(page.locator("#jours-erreur")).to_have_text("Cochez au moins un jour.")
    expect(page.locator("#moments-erreur")).to_be_visible()
    expect(page.get_by_label("Un message pour votre Caf")).to_have_value(
        "Plutôt en fin de semaine, merci."
    )  # kept
    shots.take(page, f"{name}-changer-erreur")
    page.get_by_label("Jeudi").check()
    page.get_by_label("Vendredi").check()
    page.get_by_label("Le matin (8 h – 12 h)").check()
    page.get_by_label("À partir du").fill(FROM_DAY.strftime("%d/%m/%Y"))  # as people write it
    submit(page, "Envoyer ma demande")
    expect(page.locator("h2#envoyee")).to_have_text("Votre demande est envoyée")
    expect(page.get_by_role("status")).to_contain_text("La Caf de La Réunion a reçu votre demande")
    expect(page.locator("main")).to_contain_text(
        "Le lien pour rejoindre le rendez-vous ne change pas"
    )
    expect(page.locator("main")).to_contain_text("reste prévu tant qu'il n'est pas déplacé")
    shots.take(page, f"{name}-demande-envoyee")


def test_the_person_asks_to_move_and_the_partner_reads_it_on_its_topic(
    stack: ProofStack, booked: dict[str, Booked], mailbox: Mailbox, page: Page, shots: Screenshots
) -> None:
    mine = booked["partner"]
    ask_to_move(page, mine, shots, "partenaire")

    def told() -> dict[str, Any] | None:
        return next(
            (
                reply
                for reply in partner_replies(stack)
                if reply.get("event_type") == "AppointmentOutcome"
                and reply["appointment_id"] == str(mine.appointment_id)
                and reply["outcome"] == "reschedule_requested"
            ),
            None,
        )

    outcome = wait_for(told, 60, "the partner to read reschedule_requested on its topic")
    assert outcome["calling_system"] == PARTNER
    assert outcome["preferences"]["days"] == ["jeudi", "vendredi"]
    assert outcome["preferences"]["times"] == ["matin"]
    assert outcome["preferences"]["message"] == "Plutôt en fin de semaine, merci."
    assert outcome["preferences"]["from_date"] == FROM_DAY.isoformat()

    # Nothing of the appointment changed; the Caf's team is not mailed (its partner was told).
    [row] = fetch(
        stack.owner_dsn,
        "SELECT status, revision, start_at FROM booking.appointments WHERE appointment_id = $1",
        mine.appointment_id,
    )
    assert (row["status"], row["revision"], row["start_at"]) == ("confirmed", 1, mine.start)
    query = (
        "SELECT 1 FROM notifications.processed_events p JOIN booking.reschedule_requests r "
        "ON r.id = p.event_id WHERE r.appointment_id = $1"
    )
    wait_for(lambda: fetch(stack.owner_dsn, query, mine.appointment_id), 60, "notifications")
    assert mailbox.of(mine.appointment_id, "reschedule_request") == []


def test_the_partner_moves_it_and_the_update_keeps_the_same_link(
    stack: ProofStack, booked: dict[str, Booked], mailbox: Mailbox, page: Page, shots: Screenshots
) -> None:
    mine = booked["partner"]
    new_start = _start(10, 9)  # a Thursday or not: the partner's choice
    request_id = f"move-{uuid.uuid4().hex[:12]}"
    send_request(
        stack,
        {
            "request_id": request_id,
            "request_type": "RescheduleAppointment",
            "appointment_id": str(mine.appointment_id),
            "payload": {"start": new_start.isoformat()},
        },
        str(mine.appointment_id),
    )
    update = mailbox.wait(mine.appointment_id, "rescheduled", within=120)
    assert update.message["To"].addresses[0].addr_spec == mine.address
    assert update.revision == 2
    # The same Teams link in both: the person joins as the confirmation told them.
    assert mine.join_url in join_links(mine.confirmation)
    assert join_links(update) == join_links(mine.confirmation)

    # Meetings moved the advisor's event, keeping its meeting.
    def moved() -> dict[str, Any] | None:
        events = stack.emulator("GET", "/events")["value"]
        event = next(e for e in events if e["join_url"] == mine.join_url)
        starts = datetime.fromisoformat(event["start_utc"].replace("Z", "+00:00"))
        return event if starts == new_start else None

    wait_for(moved, 60, "the advisor's event to move in the emulator")

    # The new email's page shows the new date, and the same link.
    open_page(page, update.links()["Mon rendez-vous"])
    expect(page.get_by_role("link", name="Rejoindre le rendez-vous")).to_have_attribute(
        "href", mine.join_url
    )
    expect(page.locator(".when")).to_contain_text("9 h 00")
    shots.take(page, "partenaire-deplace")


def test_a_request_for_an_appointment_booked_over_http_mails_the_cafs_team(
    stack: ProofStack, booked: dict[str, Booked], mailbox: Mailbox, page: Page, shots: Screenshots
) -> None:
    mine = booked["http"]
    ask_to_move(page, mine, shots, "http")
    team = mailbox.wait(mine.appointment_id, "reschedule_request")
    assert team.message["To"].addresses[0].addr_spec == TEAM
    assert "Caf de La Réunion" in str(team.message["Subject"])
    part = team.message.get_body(preferencelist=("plain",))
    assert part is not None
    text = str(part.get_content())
    assert "Lucie D. demande à déplacer son rendez-vous" in text
    assert f"Rendez-vous : {mine.appointment_id}" in text
    assert "Jours qui lui conviennent : jeudi, vendredi" in text
    assert "« Plutôt en fin de semaine, merci. »" in text
    raw = team.path.read_text(encoding="utf-8", errors="replace")
    assert "Dupont" not in raw and mine.address not in raw


def test_the_cgu_page_the_emails_link_passes_the_same_checks(
    stack: ProofStack, booked: dict[str, Booked], page: Page, shots: Screenshots
) -> None:
    version = current_cgu().version
    open_page(page, f"{stack.url('consent')}/cgu/{version}")
    expect(page.locator("main")).to_contain_text(current_cgu().sha256)
    shots.take(page, "cgu")
