"""Self-service from the email, in a real browser: Debian's Chromium (Playwright, headless, a
360 px wide window, JavaScript off) opens the pages from the links of real emails in the SMTP
sink of the whole stack (`visio-rdv up`'s processes on a fresh database), clicks as a person
would, and each step is checked where it lands: the booking row, the consent ledger, the Graph
emulator's meeting and event, the next email in the sink. Screenshots of every page state are
written to test-output/self-service/ (or $VISIO_TEST_OUTPUT/self-service/).

One stack for the module; each test has an appointment of its own, booked up front so their
confirmations are prepared together."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright
from visio_deploy.proof.stack import ProofStack, proof_stack
from visio_shared.links import LinkKeys, LinkPurpose, page_url, sign_link

from .accessibility import AccessibilityCheck
from .self_service_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PHONE,
    Booked,
    Mailbox,
    Screenshots,
    book_confirmed,
    fetch,
    focused,
    french_date,
    launch_phone,
    outbox_events,
    output_dir,
    page_facts,
    require_chromium,
    wait_for,
)

pytestmark = pytest.mark.long  # whole stacks: handed out first (conftest.py)

ZONE = "Indian/Reunion"
ADVISOR = {"id": "6f1c2a4e-8b1d-4c55-9a51-2f9e6f0c1d11", "display_name": "Claire Martin"}
SUBJECT = "Prime d'activité"
# One appointment per test, each for its own person (the fresh link by address finds one):
# the person's first name and the appointment's hour.
PEOPLE = {
    "view": ("Jeanne", 9),
    "withdraw": ("Louise", 10),
    "cancel": ("Marc", 11),
    "expired": ("Paul", 14),
    "forged": ("Inès", 15),
    "correct": ("Rose", 16),
}


@pytest.fixture(scope="module", autouse=True)
def chromium() -> None:
    """First of all: no stack is started for a browser that is not there."""
    require_chromium()


@pytest.fixture(scope="module")
def stack(postgres_url: str) -> Iterator[ProofStack]:
    # proof_stack makes its fresh database on DATABASE_URL's server: the one the tests chose.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATABASE_URL", postgres_url)
        with proof_stack(seed=11, quiet=True, faults=False, name="selfservice") as running:
            yield running


@pytest.fixture(scope="module")
def mailbox(stack: ProofStack) -> Mailbox:
    return Mailbox(stack.var / "mail")


@pytest.fixture(scope="module")
def booked(stack: ProofStack, mailbox: Mailbox) -> dict[str, Booked]:
    """Every test's appointment, confirmed: its email in the sink, its meeting in the
    emulator, its consent in the ledger."""
    return book_confirmed(stack, mailbox, PEOPLE, ADVISOR, SUBJECT, ZONE)


@pytest.fixture(scope="module")
def playwright(booked: dict[str, Booked]) -> Iterator[Playwright]:
    """After the stack and the bookings: Playwright's sync API runs an event loop in this
    thread, where the stack's set-up would then no longer run its own."""
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="module")
def browser(
    playwright: Playwright, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrowserContext]:
    context = launch_phone(playwright, tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield context
    finally:
        context.close()


@pytest.fixture(scope="module")
def axe_browser(playwright: Playwright) -> Iterator[Browser]:
    """The same Chromium, for axe-core, which needs JavaScript (tests/accessibility.py)."""
    launched = playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
    )
    try:
        yield launched
    finally:
        launched.close()


# Every page state the tests reach is checked for accessibility where it is opened (open_page,
# submit), once per distinct page and width; the module's fixture sets the checker.
ACCESSIBILITY: list[AccessibilityCheck] = []


@pytest.fixture(scope="module", autouse=True)
def accessibility(axe_browser: Browser) -> Iterator[AccessibilityCheck]:
    check = AccessibilityCheck(axe_browser)
    ACCESSIBILITY.append(check)
    try:
        yield check
    finally:
        ACCESSIBILITY.remove(check)


@pytest.fixture(scope="module")
def shots() -> Screenshots:
    return Screenshots(output_dir())


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    opened = browser.new_page()
    try:
        yield opened
    finally:
        opened.close()


def open_page(page: Page, url: str, status: int = 200) -> None:
    """Open a link as a person does; the page answers `status` and is what every page must be:
    French, one h1, no script, and no sideways scrolling on a 360 px phone."""
    response = page.goto(url)
    assert response is not None and response.status == status, (url, response)
    facts = page_facts(page)
    assert facts["lang"] == "fr"
    assert len(facts["h1"]) == 1, facts["h1"]
    assert facts["scripts"] == 0  # works without JavaScript: there is none
    assert facts["scrollWidth"] <= PHONE["width"], f"{url} scrolls sideways: {facts}"
    for check in ACCESSIBILITY:
        check.page(page)


def submit(page: Page, button: str, status: int = 200) -> None:
    """Click a form's button; the page it lands on (after any redirect) answers `status`."""
    with page.expect_navigation() as landed:
        page.get_by_role("button", name=button, exact=True).click()
    assert landed.value is not None and landed.value.status == status, landed.value
    for check in ACCESSIBILITY:
        check.page(page)


# --- Mon rendez-vous ----------------------------------------------------------------------------


def test_mon_rendez_vous_shows_the_appointment_and_sends_the_link_again(
    stack: ProofStack, booked: dict[str, Booked], mailbox: Mailbox, page: Page, shots: Screenshots
) -> None:
    mine = booked["view"]
    link = mine.links["Mon rendez-vous"]
    assert link.startswith(stack.url("booking") + "/mon-rendez-vous/")
    assert "example.fr" not in link and str(mine.appointment_id) not in link  # opaque

    open_page(page, link)
    expect(page).to_have_title("Mon rendez-vous – Visio RDV – Caf")
    expect(page.locator("h1")).to_have_text("Mon rendez-vous visio avec la Caf de La Réunion")
    when = page.locator(".when")
    expect(when).to_contain_text(french_date(mine.start, ZONE))
    expect(when).to_contain_text("9 h 00")
    expect(when).to_contain_text("heure de La Réunion")
    expect(page.locator("dd").filter(has_text="Claire Martin")).to_have_count(1)
    expect(page.locator("dd").filter(has_text=SUBJECT)).to_have_count(1)
    join = page.get_by_role("link", name="Rejoindre le rendez-vous")
    expect(join).to_have_attribute("href", mine.join_url)
    expect(page.get_by_role("link", name=mine.join_url)).to_have_attribute("href", mine.join_url)
    shots.take(page, "mon-rendez-vous")

    # The main actions, reached with Tab alone, in reading order, each with a visible ring.
    wanted = ["Rejoindre le rendez-vous", "Recevoir à nouveau le lien", "Annuler le rendez-vous"]
    reached = []
    for _ in range(40):
        page.keyboard.press("Tab")
        now = focused(page)
        if now["text"] in wanted and now["text"] not in reached:
            assert now["visible"] and now["outline"] == "solid" and now["outlineWidth"] >= 2, now
            reached.append(now["text"])
        if reached == wanted:
            break
    assert reached == wanted
    shots.take(page, "mon-rendez-vous-focus-clavier")

    submit(page, "Recevoir à nouveau le lien")
    expect(page.get_by_role("status")).to_contain_text("vient de vous être envoyé")
    shots.take(page, "mon-rendez-vous-lien-renvoye")
    resent = mailbox.wait(mine.appointment_id, "link_resent")
    assert resent.message["To"].addresses[0].addr_spec == mine.address
    assert mine.join_url in resent.html
    assert set(resent.links()) == {"Mon rendez-vous", "Enregistrement", "Mes consentements"}

    # A second click within the interval sends nothing more, and says so.
    submit(page, "Recevoir à nouveau le lien", status=429)
    expect(page.get_by_role("status")).to_contain_text("Un message vous a déjà été envoyé")
    shots.take(page, "mon-rendez-vous-deja-renvoye")
    assert outbox_events(stack.owner_dsn, mine.appointment_id, "AppointmentLinkRequested") == 1

    # The link in the new email opens the same page.
    open_page(page, resent.links()["Mon rendez-vous"])
    expect(page.locator("dd").filter(has_text="Claire Martin")).to_have_count(1)


def test_a_correction_from_the_page_reaches_the_next_email(
    stack: ProofStack, booked: dict[str, Booked], mailbox: Mailbox, page: Page, shots: Screenshots
) -> None:
    """The person corrects their name and address; the new address gets a link to confirm it,
    and once it is followed the correction reaches every service: the next email goes to the
    new address, under the corrected name, and consent chains the new pseudonym."""
    mine = booked["correct"]
    new_address = "rose.martin-correct@example.org"
    open_page(page, mine.links["Mon rendez-vous"])
    page.get_by_role("link", name="Corriger mes coordonnées").click()
    open_page(page, page.url)  # the form: labelled fields, no script, axe at 360 px
    expect(page.get_by_label("Adresse email")).to_have_value(mine.address)
    page.get_by_label("Nom", exact=True).fill("Martin")
    page.get_by_label("Adresse email").fill("not an address")
    submit(page, "Enregistrer mes coordonnées", status=422)
    expect(page.locator("#email-erreur")).to_be_visible()
    expect(page.get_by_label("Nom", exact=True)).to_have_value("Martin")  # kept
    page.get_by_label("Adresse email").fill(new_address)
    submit(page, "Enregistrer mes coordonnées")
    sent = f"Un message vient de partir à {new_address}"
    expect(page.get_by_role("status")).to_contain_text(sent)
    shots.take(page, "corriger-coordonnees")

    # Nothing has changed yet: the address is not confirmed.
    [row] = fetch(
        stack.owner_dsn,
        "SELECT email, last_name, revision FROM booking.appointments WHERE appointment_id = $1",
        mine.appointment_id,
    )
    assert (row["email"], row["last_name"], row["revision"]) == (mine.address, "Dupont", 1)
    [asked] = fetch(
        stack.owner_dsn,
        "SELECT code_sha256 FROM booking.contact_corrections WHERE appointment_id = $1",
        mine.appointment_id,
    )
    confirmation = mailbox.wait(mine.appointment_id, "address_confirmation")
    assert confirmation.message["To"].addresses[0].addr_spec == new_address
    [confirm_link] = re.findall(r'href="([^"]*/confirmer-adresse/[^"]+)"', confirmation.html)
    code = confirm_link.rsplit("/", 1)[1]
    assert code not in str(asked["code_sha256"])  # only its hash is kept
    assert hashlib.sha256(code.encode()).hexdigest() == asked["code_sha256"]

    open_page(page, confirm_link)  # a page with a button: opening the link changes nothing
    submit(page, "Confirmer mon adresse email")
    expect(page.get_by_role("status")).to_contain_text("Votre adresse est confirmée")
    shots.take(page, "adresse-confirmee")
    submit_again = page.request.post(confirm_link)  # used: a second try does nothing more
    assert submit_again.status == 404

    # The correction, as a partner's CorrectContact: revision 2, and the next email goes to the
    # new address under the corrected name, with links to the appointment as it now stands.
    corrected = mailbox.wait(mine.appointment_id, "contact_corrected")
    to = corrected.message["To"].addresses[0]
    assert (to.addr_spec, to.display_name) == (new_address, "Rose Martin")
    assert corrected.revision == 2
    open_page(page, corrected.links()["Mon rendez-vous"])
    expect(page.locator("h1")).to_have_text("Mon rendez-vous visio avec la Caf de La Réunion")
    ledger = wait_for(
        lambda: fetch(
            stack.owner_dsn,
            "SELECT kind FROM consent.ledger WHERE appointment_id = $1 AND kind = "
            "'contact_corrected'",
            mine.appointment_id,
        ),
        60,
        "consent to chain the correction",
    )
    assert len(ledger) == 1


# --- Enregistrement and Mes consentements -------------------------------------------------------


def test_withdrawing_recording_records_it_and_turns_recording_off(
    stack: ProofStack,
    booked: dict[str, Booked],
    page: Page,
    browser: BrowserContext,
    shots: Screenshots,
) -> None:
    mine = booked["withdraw"]
    link = mine.links["Enregistrement"]
    assert link.startswith(stack.url("consent") + "/enregistrement/")

    open_page(page, link)
    expect(page.locator("#choix + p")).to_contain_text("Vous avez autorisé l'enregistrement")
    # Its Caf by name; no contact entry in the stack: the national contact page.
    expect(page.locator("h2#rendez-vous")).to_have_text(
        "Votre rendez-vous avec la Caf de La Réunion"
    )
    expect(page.locator("h2#caf")).to_have_text("Contacter la Caf de La Réunion")
    shots.take(page, "enregistrement-autorise")
    page.get_by_role("link", name="Retirer mon autorisation d'enregistrement").click()
    expect(page.locator("h2#confirmer")).to_have_text("Confirmez-vous ?")
    shots.take(page, "enregistrement-confirmation")

    # The same confirmation open in a second tab: submitted after the first, it changes nothing.
    second = browser.new_page()
    open_page(second, page.url)

    # Confirmed with the keyboard: Tab to the button, Enter.
    button = page.get_by_role("button", name="Retirer mon autorisation d'enregistrement")
    for _ in range(20):
        page.keyboard.press("Tab")
        if button.evaluate("el => el === document.activeElement"):
            break
    now = focused(page)
    assert now["tag"] == "button" and now["visible"] and now["outline"] == "solid", now
    with page.expect_navigation() as landed:
        page.keyboard.press("Enter")
    assert landed.value is not None and landed.value.status == 200
    assert page.url == link
    expect(page.locator("#choix + p")).to_contain_text(
        "autorisation d'enregistrement a été retirée"
    )
    expect(page.get_by_text("L'entretien ne sera pas enregistré.")).to_be_visible()
    shots.take(page, "enregistrement-retire")

    submit(second, "Retirer mon autorisation d'enregistrement")
    second.close()

    ledger = fetch(
        stack.owner_dsn,
        "SELECT kind, payload FROM consent.ledger WHERE appointment_id = $1 ORDER BY seq",
        mine.appointment_id,
    )
    assert [row["kind"] for row in ledger] == [
        "cgu_accepted",
        "recording_authorised",
        "recording_withdrawn",
    ]
    assert json.loads(ledger[-1]["payload"])["channel"] == "self_service"

    def recording_off() -> dict[str, Any] | None:
        meetings = stack.emulator("GET", "/online-meetings")["value"]
        meeting = next(
            m["meeting"] for m in meetings if m["meeting"]["joinWebUrl"] == mine.join_url
        )
        return meeting if meeting.get("allowRecording") is False else None

    meeting = wait_for(recording_off, 30, "the meeting's recording to be turned off")
    assert meeting["allowTranscription"] is False


def test_mes_consentements_shows_the_records_with_their_proof(
    stack: ProofStack, booked: dict[str, Booked], page: Page, shots: Screenshots
) -> None:
    mine = booked["withdraw"]  # after the withdrawal above, when run with it
    link = mine.links["Mes consentements"]
    assert link.startswith(stack.url("consent") + "/mes-consentements/")
    ledger = fetch(
        stack.owner_dsn,
        "SELECT seq, kind, prev_hash, hash FROM consent.ledger WHERE appointment_id = $1 "
        "ORDER BY seq",
        mine.appointment_id,
    )

    open_page(page, link)
    expect(page.locator("h1")).to_have_text("Mes consentements")
    titles = page.locator("article h3")
    expect(titles.first).to_contain_text("Acceptation des conditions générales d'utilisation")
    expect(titles).to_have_count(len(ledger))
    proofs = page.locator("code.proof")
    for row in ledger:
        expect(proofs.filter(has_text=row["hash"])).not_to_have_count(0)
    expect(page.get_by_text(mine.address)).to_be_visible()  # kept beside the chain, with its end
    expect(page.locator("h2#caf")).to_have_text("Contacter la Caf de La Réunion")
    shots.take(page, "mes-consentements")

    with page.expect_download() as downloading:
        page.get_by_role("link", name="Télécharger mes données (fichier JSON)").click()
    download = downloading.value
    assert download.suggested_filename == "mes-consentements-visio-rdv.json"
    export = json.loads(Path(download.path()).read_text(encoding="utf-8"))
    assert [(r["seq"], r["kind"], r["hash"]) for r in export["records"]] == [
        (row["seq"], row["kind"], row["hash"]) for row in ledger
    ]
    for record in export["records"]:  # each one re-checks by hand, as the README says
        sealed = record["prev_hash"].encode() + rfc8785.dumps(record["record"])
        assert hashlib.sha256(sealed).hexdigest() == record["hash"]
    assert export["personal_data"][0]["email"] == mine.address

    # The proof elements are folded away, and open for whoever wants them.
    first_hash = page.locator("article").first.locator("code.proof").first
    expect(first_hash).to_be_hidden()
    page.locator("article").first.get_by_text("Éléments de preuve").click()
    expect(first_hash).to_be_visible()

    # Everything every service holds, on one page that passes the same checks (axe included).
    everything = page.get_by_role("link", name="Voir toutes mes données").get_attribute("href")
    assert everything is not None
    open_page(page, stack.url("consent") + everything)
    expect(page.locator("h1")).to_have_text("Toutes mes données")
    expect(page.get_by_text("Copie incomplète")).to_have_count(0)  # every service answered
    expect(page.get_by_text(mine.address).first).to_be_visible()  # booking's part
    expect(page.locator("#courriels + ul li").first).to_be_visible()  # notifications' part
    expect(page.locator("article h3").filter(has_text="Rendez-vous du")).to_have_count(1)
    shots.take(page, "mes-donnees")
    recorded = fetch(
        stack.owner_dsn,
        "SELECT payload->>'channel' AS channel FROM consent.ledger "
        "WHERE kind = 'access_exported' AND appointment_id = $1",
        mine.appointment_id,
    )
    assert [row["channel"] for row in recorded] == ["self_service"]


# --- Annuler ------------------------------------------------------------------------------------


def test_cancelling_from_the_page_cancels_once(
    stack: ProofStack,
    booked: dict[str, Booked],
    mailbox: Mailbox,
    page: Page,
    browser: BrowserContext,
    shots: Screenshots,
) -> None:
    mine = booked["cancel"]
    link = mine.links["Mon rendez-vous"]

    open_page(page, link)
    page.get_by_role("link", name="Annuler le rendez-vous").click()
    expect(page.locator("h2#confirmer")).to_have_text("Voulez-vous vraiment annuler\u00a0?")
    expect(page.locator("main")).to_contain_text("Claire Martin")
    shots.take(page, "annuler-confirmation")
    # The confirmation step as it stood before the cancellation, in a second tab.
    before = browser.new_page()
    open_page(before, page.url)

    submit(page, "Oui, annuler le rendez-vous")
    assert page.url == link
    expect(page.locator("h2#etat")).to_have_text("Ce rendez-vous est annulé")
    expect(page.locator("main")).to_contain_text("Il a été annulé à votre demande le")
    expect(page.get_by_role("link", name="Annuler le rendez-vous")).to_have_count(0)
    expect(page.get_by_role("link", name="Rejoindre le rendez-vous")).to_have_count(0)
    shots.take(page, "annule")

    row = fetch(
        stack.owner_dsn,
        "SELECT status, revision FROM booking.appointments WHERE appointment_id = $1",
        mine.appointment_id,
    )[0]
    assert (row["status"], row["revision"]) == ("cancelled", 2)
    cancellation = mailbox.wait(mine.appointment_id, "cancellation")
    assert cancellation.message["To"].addresses[0].addr_spec == mine.address
    assert "est annulé" in str(cancellation.message["Subject"])
    assert "Comme vous l'avez demandé" in unescape(cancellation.html)  # l&#39;avez, as written
    # What still makes sense: the page (it says cancelled) and the consents, no recording choice.
    assert set(cancellation.links()) == {"Mon rendez-vous", "Mes consentements"}

    def event_cancelled() -> dict[str, Any] | None:
        events = stack.emulator("GET", "/events")["value"]
        event = next(e for e in events if e["join_url"] == mine.join_url)
        return event if event["is_deleted"] else None

    wait_for(event_cancelled, 30, "the advisor's event to be cancelled in the emulator")

    # The pre-cancellation form, submitted now, and the old link's cancel step: nothing more.
    submit(before, "Oui, annuler le rendez-vous")
    expect(before.locator("h2#etat")).to_have_text("Ce rendez-vous est annulé")
    before.close()
    open_page(page, link + "/annuler")
    assert page.url == link
    assert outbox_events(stack.owner_dsn, mine.appointment_id, "AppointmentCancelled") == 1
    history = fetch(
        stack.owner_dsn,
        "SELECT count(*) AS n FROM booking.appointment_history "
        "WHERE appointment_id = $1 AND status = 'cancelled'",
        mine.appointment_id,
    )
    assert history[0]["n"] == 1
    assert len(mailbox.of(mine.appointment_id, "cancellation")) == 1

    # The right of access outlives the appointment: a fresh link brings « Mes consentements ».
    open_page(page, f"{stack.url('booking')}/nouveau-lien?lien={link.rsplit('/', 1)[1]}")
    expect(page.locator("main")).to_contain_text("Ce rendez-vous a été annulé.")
    submit(page, "Recevoir un nouveau lien par email")
    expect(page.get_by_role("status")).to_contain_text("« Mes consentements »")
    shots.take(page, "annule-nouveau-lien")
    consents_only = mailbox.wait(mine.appointment_id, "link_resent")
    assert set(consents_only.links()) == {"Mes consentements"}
    wait_for(
        lambda: fetch(
            stack.owner_dsn,
            "SELECT 1 FROM consent.appointments "
            "WHERE appointment_id = $1 AND cancelled_at IS NOT NULL",
            mine.appointment_id,
        ),
        30,
        "consent to know of the cancellation",
    )
    open_page(page, consents_only.links()["Mes consentements"])
    expect(page.locator("article h3").first).to_contain_text("Acceptation des conditions")


# --- Links that get nowhere ---------------------------------------------------------------------


def test_an_expired_link_shows_so_and_gets_a_fresh_one_by_email(
    stack: ProofStack, booked: dict[str, Booked], mailbox: Mailbox, page: Page, shots: Screenshots
) -> None:
    mine = booked["expired"]
    keys = LinkKeys.parse((stack.var / "link-keys").read_text().strip())
    past = datetime.now(UTC) - timedelta(hours=1)

    def expired(purpose: LinkPurpose, service: str) -> str:
        token = sign_link(keys, purpose, mine.appointment_id, 1, past)
        return page_url(stack.url(service), purpose, token)

    # Consent's pages send an expired link to booking's « nouveau lien », the link in hand.
    open_page(page, expired(LinkPurpose.RECORDING, "consent"), status=410)
    expect(page.locator("h1")).to_have_text("Ce lien a expiré")
    expect(page.get_by_text("Vous avez autorisé")).to_have_count(0)
    shots.take(page, "enregistrement-lien-expire")
    fresh = page.get_by_role("link", name="Recevoir un nouveau lien")
    expect(fresh).to_have_attribute(
        "href", re.compile(re.escape(stack.url("booking")) + r"/nouveau-lien\?lien=")
    )

    open_page(page, expired(LinkPurpose.MANAGE, "booking"), status=410)
    expect(page.locator("h1")).to_have_text("Ce lien a expiré")
    expect(page.get_by_text("Claire Martin")).to_have_count(0)
    shots.take(page, "mon-rendez-vous-lien-expire")
    submit(page, "Recevoir un nouveau lien par email")
    expect(page.get_by_role("status")).to_contain_text("vient d'être envoyé")
    shots.take(page, "nouveau-lien-envoye")

    resent = mailbox.wait(mine.appointment_id, "link_resent")
    assert resent.message["To"].addresses[0].addr_spec == mine.address
    open_page(page, resent.links()["Mon rendez-vous"])
    expect(page.get_by_role("link", name="Rejoindre le rendez-vous")).to_be_visible()


def test_a_forged_or_misused_link_gets_nowhere_but_to_a_fresh_one(
    stack: ProofStack, booked: dict[str, Booked], mailbox: Mailbox, page: Page, shots: Screenshots
) -> None:
    mine = booked["forged"]
    manage = mine.links["Mon rendez-vous"]
    recording = mine.links["Enregistrement"]
    manage_token = manage.rsplit("/", 1)[1]
    recording_token = recording.rsplit("/", 1)[1]

    def tampered(url: str) -> str:
        # One character of the signed part changed: the signature no longer matches.
        base, token = url.rsplit("/", 1)
        middle = len(token) // 2
        swapped = "B" if token[middle] == "A" else "A"
        return f"{base}/{token[:middle]}{swapped}{token[middle + 1 :]}"

    rotated_out = LinkKeys.parse(LinkKeys.generate("old"))  # a key the stack no longer holds
    by_old_key = sign_link(
        rotated_out, LinkPurpose.MANAGE, mine.appointment_id, 1, mine.start + timedelta(days=30)
    )
    nowhere = {
        "tampered": tampered(manage),
        "another page's link": f"{stack.url('booking')}/mon-rendez-vous/{recording_token}",
        "revoked key": page_url(stack.url("booking"), LinkPurpose.MANAGE, by_old_key),
    }
    for what, url in nowhere.items():
        open_page(page, url, status=404)
        expect(page.locator("h1"), what).to_have_text("Ce lien n'est pas valide")
        expect(page.get_by_text("Claire Martin"), what).to_have_count(0)
    for url in (tampered(recording), f"{stack.url('consent')}/enregistrement/{manage_token}"):
        open_page(page, url, status=404)
        expect(page.locator("h1")).to_have_text("Ce lien n'est pas valide")
        expect(page.get_by_text("Vous avez autorisé")).to_have_count(0)

    # From the invalid page, a fresh link by the address the appointment was booked with.
    open_page(page, tampered(manage), status=404)
    shots.take(page, "lien-invalide")
    page.get_by_label("Votre adresse email").fill(mine.address)
    submit(page, "Recevoir un nouveau lien")
    expect(page.get_by_role("status")).to_contain_text("Regardez votre messagerie")
    shots.take(page, "nouveau-lien-par-adresse")
    resent = mailbox.wait(mine.appointment_id, "link_resent")
    assert resent.message["To"].addresses[0].addr_spec == mine.address
    assert (
        fetch(
            stack.owner_dsn,
            "SELECT status FROM booking.appointments WHERE appointment_id = $1",
            mine.appointment_id,
        )[0]["status"]
        == "confirmed"
    )


def test_the_logs_hold_no_link_and_no_address(
    stack: ProofStack, booked: dict[str, Booked], mailbox: Mailbox
) -> None:
    """Whatever the tests above did, the services' logs name a link by its fingerprint only,
    and never the person."""
    services = ("booking", "meetings", "notifications", "consent")  # not the sink: a test tool
    logs = {name: (stack.stack.logs / f"{name}.log").read_text() for name in services}
    # What the pages did is there, each link named by its fingerprint.
    assert re.search(r"self-service: cancelled \(link [0-9a-f]{32}\)", logs["booking"])
    assert re.search(r"withdrawn from link [0-9a-f]{32}", logs["consent"])
    tokens = {url.rsplit("/", 1)[1] for mail in mailbox.all() for url in mail.links().values()}
    assert tokens
    personal = {mine.address for mine in booked.values()} | {"Dupont"}
    for name, text in logs.items():
        assert not [token for token in tokens if token in text], f"a link in {name}"
        assert not [word for word in personal if word in text], f"personal data in {name}"


# --- Accessibility ------------------------------------------------------------------------------


def test_the_accessibility_statement_is_linked_from_every_page_and_says_no_audit_was_made(
    stack: ProofStack, booked: dict[str, Booked], page: Page, shots: Screenshots
) -> None:
    mine = booked["view"]
    for service, link in (
        ("booking", mine.links["Mon rendez-vous"]),
        ("consent", mine.links["Mes consentements"]),
    ):
        open_page(page, link)
        with page.expect_navigation() as landed:
            page.get_by_role("link", name="Accessibilité : non conforme").click()
        assert landed.value is not None and landed.value.status == 200
        assert page.url == stack.url(service) + "/accessibilite"
        open_page(page, page.url)  # French, one h1, no script, no sideways scrolling; axe
        expect(page.locator("h1")).to_have_text("Déclaration d'accessibilité")
        expect(page.get_by_text("aucun audit")).to_be_visible()
        expect(page.get_by_text("n'est pas en conformité")).to_be_visible()
    shots.take(page, "declaration-accessibilite")


def test_every_email_passes_axe_at_phone_and_desktop_widths(
    booked: dict[str, Booked], mailbox: Mailbox, accessibility: AccessibilityCheck
) -> None:
    """Each kind of email the module's appointments received (the confirmations at least; the
    « link again », update and cancellation emails when the tests above ran), as HTML."""
    ours = {b.appointment_id for b in booked.values()}
    kinds = set()
    for mail in mailbox.all():
        if mail.appointment_id not in ours:
            continue
        body = mail.message.get_body(preferencelist=("html",))
        assert body is not None, f"{mail.kind} has no HTML part"
        accessibility.html(body.get_content(), f"email {mail.kind}", keyboard=False)
        kinds.add(mail.kind)
    assert "confirmation" in kinds, kinds
    assert {f"email {kind} @ phone" for kind in kinds} <= set(accessibility.checked)


def test_axe_fails_one_of_our_pages_once_its_field_loses_its_label(
    booked: dict[str, Booked], page: Page, axe_browser: Browser
) -> None:
    """Break it on purpose: the « lien invalide » page's address field without its label is
    refused, so a check that passes means something."""
    manage = booked["view"].links["Mon rendez-vous"]
    base, token = manage.rsplit("/", 1)
    middle = len(token) // 2
    forged = f"{base}/{token[:middle]}{'B' if token[middle] == 'A' else 'A'}{token[middle + 1 :]}"
    open_page(page, forged, status=404)
    html = page.content()
    assert re.search(r"<label[^>]*>\s*Votre adresse email", html)
    unlabelled = re.sub(r"<label[^>]*>\s*Votre adresse email.*?</label>", "", html, flags=re.S)
    with pytest.raises(AssertionError, match=r"label \(critical\)"):
        AccessibilityCheck(axe_browser).html(unlabelled, "lien invalide without its label")
