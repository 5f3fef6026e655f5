"""The advisor reports how the appointment went, signed in (issue 24), on real parts: booking
on PostgreSQL and the broker, the Graph + Entra ID emulator over HTTPS (authorize form, code
with PKCE, id_token) and consent's ledger on PostgreSQL.

A partner books over Kafka; its advisor opens their page, is sent to the emulator's sign-in,
comes back with a code msal redeems, and reports « La personne n'est pas venue ». Booking's
status is `no_show`, the partner's outcome stream says so, the event on appointments.v1 makes
consent's ledger hold a `connection` record with the advisor's object id; an attendance report
that disagrees is kept in the history but does not move the status. Another advisor, signed
in, gets the 403 page.
"""

from __future__ import annotations

import contextlib
import html
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from visio_booking.advisor_signin import SESSION_COOKIE, AdvisorSession
from visio_booking.handlers import follow_status
from visio_consent.connections import record_meeting_outcome
from visio_consent.handlers import record_consent
from visio_consent.ledger import SCHEMA as CONSENT
from visio_consent.settings import ConsentSettings
from visio_fakes.graph_emulator import EmulatorSettings, serve_in_background
from visio_fakes.graph_emulator.main import RunningEmulator
from visio_runtime.db import create_pool, migrate, role_dsn
from visio_runtime.testing import RecordingPublisher
from visio_shared import AppointmentRequested, Topics, parse_event
from visio_shared.events import AdvisorOutcomeReported, MeetingAttendanceRecorded
from visio_testing import create_database, drop_database

from .conftest import Booking, booking_body, start_booking
from .test_kafka import SYSTEM, replies, request, send

CLAIRE = "6f1c2a4e-8b1d-4c55-9a51-2f9e6f0c1d11"
PAUL = "0b7e4d2a-1c3f-4e5a-8d9b-6a2c1f0e3d44"
CALLBACK = "http://booking/conseiller/connexion"


@pytest.fixture(scope="module")
async def emulator(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningEmulator]:
    settings = EmulatorSettings(
        host="127.0.0.1",
        port=0,
        ca_dir=str(tmp_path_factory.mktemp("dev-ca")),
        sign_in_redirect_uris=[CALLBACK],
        log_level="warning",
    )
    running = await serve_in_background(settings)
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture(scope="module")
async def booking(
    postgres_url: str, kafka_bootstrap: str, emulator: RunningEmulator
) -> AsyncIterator[Booking]:
    harness, close = await start_booking(
        postgres_url,
        kafka_bootstrap,
        advisor_authority=emulator.authority,
        advisor_redirect_uri=CALLBACK,
        advisor_ca_bundle=emulator.ca.bundle_path,
        advisor_session_key="test-advisor-session-key",
    )
    try:
        yield harness
    finally:
        await close()


async def sign_in(
    booking: Booking, emulator: RunningEmulator, page: str, account: str
) -> tuple[httpx.AsyncClient, httpx.Response]:
    """A browser of its own: open the page, follow each redirect to the emulator's sign-in
    form, submit it as `account`, follow the redirects back; the last answer."""
    browser = httpx.AsyncClient(transport=booking.client._transport, base_url="http://booking")
    first = await browser.get(page)
    assert first.status_code == 303, first.text
    authorize = first.headers["location"]
    assert authorize.startswith(f"{emulator.authority}/oauth2/v2.0/authorize?")
    assert "code_challenge_method=S256" in authorize and "code_challenge=" in authorize
    async with httpx.AsyncClient(verify=str(emulator.ca.bundle_path)) as entra:
        form_page = await entra.get(authorize)
        assert form_page.status_code == 200 and "Se connecter" in form_page.text
        fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', form_page.text))
        fields = {name: value.replace("&amp;", "&") for name, value in fields.items()}
        fields["user"] = account
        back = await entra.post(f"{emulator.authority}/oauth2/v2.0/authorize", data=fields)
    assert back.status_code == 302, back.text
    location = back.headers["location"]
    assert location.startswith(CALLBACK + "?code=")
    answer = await browser.get(location.removeprefix("http://booking"))
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == page
    return browser, await browser.get(page)


async def book_over_kafka(booking: Booking) -> str:
    body = booking_body(advisor={"id": CLAIRE, "display_name": "Claire Martin"})
    body["user"]["first_name"] = "Jeanne"
    book = request("BookAppointment", body)
    await send(booking, book)
    (accepted,) = await replies(booking, book["request_id"])
    assert accepted["event_type"] == "BookingAccepted", accepted
    appointment_id: str = accepted["appointment_id"]
    return appointment_id


async def test_the_advisor_signs_in_reports_no_show_and_the_ledger_holds_it(
    booking: Booking, emulator: RunningEmulator, postgres_url: str
) -> None:
    appointment_id = await book_over_kafka(booking)
    page = f"/conseiller/rendez-vous/{appointment_id}"

    browser, opened = await sign_in(booking, emulator, page, CLAIRE)
    async with contextlib.aclosing(browser):
        assert opened.status_code == 200, opened.text
        assert "Jeanne D." in opened.text and "Dupont" not in opened.text
        assert "Revenez sur cette page une fois le rendez-vous commencé" in opened.text
        # The appointment has begun (booked in the future, moved behind the API).
        await booking.sql(
            "UPDATE appointments SET start_at = now() - interval '40 minutes' "
            "WHERE appointment_id = $1",
            uuid.UUID(appointment_id),
        )
        opened = await browser.get(page)
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', opened.text)
        assert csrf is not None and 'value="no_show"' in opened.text

        forged = await browser.post(page, data={"csrf": "0" * 64, "outcome": "held"})
        assert forged.status_code == 403 and "rien n'a été enregistré" in forged.text

        sent = await browser.post(
            page, data={"csrf": csrf.group(1), "outcome": "no_show", "comment": "Pas connectée."}
        )
        assert sent.status_code == 303 and sent.headers["location"] == f"{page}?enregistre=1"
        done = await browser.get(sent.headers["location"])
        assert "C'est enregistré" in done.text
        assert "La personne n'est pas venue" in html.unescape(done.text)

    (row,) = await booking.sql(
        "SELECT status, outcome_reported_by, outcome_comment FROM appointments "
        "WHERE appointment_id = $1",
        uuid.UUID(appointment_id),
    )
    assert tuple(row) == ("no_show", CLAIRE, "Pas connectée.")

    # The partner hears it on its outcome stream.
    topic = booking.runtime.topics.partner_replies(SYSTEM)
    outcomes = await booking.records(
        topic, lambda got: any(b'"no_show"' in r.value and appointment_id.encode() in r.value
                               for r in got)
    )  # fmt: skip
    outcome = next(
        json.loads(r.value) for r in outcomes
        if b'"no_show"' in r.value and r.key == appointment_id.encode()
    )  # fmt: skip
    assert outcome["event_type"] == "AppointmentOutcome"
    assert outcome["detail"] == "reported by the advisor"

    # An attendance report that says the person came: history, not status.
    requested, reported = await appointment_events(booking, appointment_id)
    attended = MeetingAttendanceRecorded(
        **requested.caused(appointment_id=requested.appointment_id, revision=1),
        online_meeting_id="MSo-meeting",
        report_id="report-1",
        meeting_start=datetime.now(UTC) - timedelta(minutes=40),
        meeting_end=datetime.now(UTC) - timedelta(minutes=10),
        participants=[],
        public_attended=True,
    )
    await follow_status(booking.runtime.db, booking.app.state.context, attended)
    view = await booking.view(appointment_id, caller="ops")
    assert view["status"] == "no_show"
    assert [e["status"] for e in view["history"]][-2:] == ["advisor_reported", "held"]

    # Consent's ledger: the report, from the very event on appointments.v1, with the id.
    records = await ledger_after(postgres_url, requested, [reported, attended])
    by_source = {record["attendance"]: record for record in records}
    assert by_source["reported_by_advisor"]["outcome"] == "no_show"
    assert by_source["reported_by_advisor"]["advisor_id"] == CLAIRE
    assert by_source["reported_by_advisor"]["comment_sha256"] is not None
    assert "Pas connectée" not in json.dumps(records)
    assert by_source["recorded"]["public_attended"] is True, "both kept as proof"


async def test_another_advisor_signed_in_is_refused(
    booking: Booking, emulator: RunningEmulator
) -> None:
    claire = {"id": CLAIRE, "display_name": "Claire Martin"}
    appointment_id = await booking.book(advisor=claire, days=9)
    page = f"/conseiller/rendez-vous/{appointment_id}"
    browser, opened = await sign_in(booking, emulator, page, PAUL)
    async with contextlib.aclosing(browser):
        assert opened.status_code == 403
        assert "ce rendez-vous est celui d'un autre conseiller" in opened.text
        assert "Jeanne" not in opened.text
        # Even with a valid token of his own session, the report is refused.
        csrf = booking.app.state.advisor_sign_in.csrf(session_of(booking, browser), appointment_id)
        refused = await browser.post(page, data={"csrf": csrf, "outcome": "held"})
        assert refused.status_code == 403
    (row,) = await booking.sql(
        "SELECT status FROM appointments WHERE appointment_id = $1", uuid.UUID(appointment_id)
    )
    assert row["status"] == "requested"


def session_of(booking: Booking, browser: httpx.AsyncClient) -> AdvisorSession:
    """The session this browser's cookie holds, as booking reads it."""
    value = next(c.value for c in browser.cookies.jar if c.name == SESSION_COOKIE)
    data = booking.app.state.advisor_sign_in.read(value)
    return AdvisorSession(data["oid"], data["name"], data["sid"], data["exp"])


async def appointment_events(
    booking: Booking, appointment_id: str
) -> tuple[AppointmentRequested, AdvisorOutcomeReported]:
    key = appointment_id.encode()
    records = await booking.records(
        booking.runtime.topics.appointments,
        lambda got: any(r.key == key and b"AdvisorOutcomeReported" in r.value for r in got),
    )
    events = [parse_event(r.value) for r in records if r.key == key]
    requested = next(e for e in events if isinstance(e, AppointmentRequested))
    reported = next(e for e in events if isinstance(e, AdvisorOutcomeReported))
    return requested, reported


async def ledger_after(
    postgres_url: str, requested: AppointmentRequested, outcomes: list[Any]
) -> list[dict[str, Any]]:
    """Consent's handlers on a database of their own: the connection records they chain."""
    owner_dsn = await create_database(postgres_url, prefix="visio_consent_test")
    try:
        await migrate(owner_dsn, CONSENT, service_password="visio_consent")
        dsn = role_dsn(owner_dsn, CONSENT.service_role, "visio_consent")
        pool = await create_pool(dsn, schema=CONSENT.schema)
        try:
            settings = ConsentSettings(subject_key="test-subject-key")
            publisher, topics = RecordingPublisher(), Topics("visio-rdv-test")
            await record_consent(requested, pool, publisher, settings, topics)
            for event in outcomes:
                await record_meeting_outcome(event, pool, publisher, topics)
        finally:
            await pool.close()
        conn = await asyncpg.connect(owner_dsn)
        try:
            rows = await conn.fetch(
                "SELECT payload FROM consent.ledger WHERE kind = 'connection' ORDER BY seq"
            )
        finally:
            await conn.close()
        return [json.loads(row["payload"]) for row in rows]
    finally:
        await drop_database(postgres_url, owner_dsn)
