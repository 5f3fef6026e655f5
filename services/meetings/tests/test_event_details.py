"""The advisor's Outlook event says who is coming and how (issue 24): the first name and the
initial of the last name, the device, the subject, the recording choice and the link to the
advisor's page in booking; written again on a contact correction, a withdrawal and an erasure,
its Teams block kept, mailing no one. Against the Graph emulator and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
from visio_meetings.advisor_note import last_initial
from visio_meetings.calls import ERASED_SUBJECT, Call
from visio_meetings.event_updates import teams_block
from visio_meetings.graph import GraphClient
from visio_meetings.handlers import MeetingsDeps, handle_event
from visio_shared import (
    AppointmentEvent,
    AppointmentRequested,
    ContactCorrected,
    Device,
    Person,
    PersonalDataErasureRequested,
)

if TYPE_CHECKING:
    from conftest import Changes, EmulatorControl

BOOKING = "https://rdv.caf.example"
LATER = dt.datetime(2031, 3, 11, 14, 0, tzinfo=dt.timezone(dt.timedelta(hours=4)))

Make = Callable[..., AppointmentRequested]
Handle = Callable[[AppointmentEvent], Any]


@pytest.fixture
def handle(deps: MeetingsDeps) -> Handle:
    """The service's handling, with booking's public address set as production sets it."""
    linked = replace(deps, booking_public_url=BOOKING)

    async def run(event: AppointmentEvent) -> None:
        await handle_event(event, linked)

    return run


def booked(make: Make, *, recording_authorised: bool = False) -> AppointmentRequested:
    """A person whose name is user input that must not become HTML."""
    appointment = make(recording_authorised=recording_authorised)
    user = appointment.user.model_copy(
        update={"first_name": "Jeanne <b>&", "last_name": "dupont", "device": Device.TABLET}
    )
    return appointment.model_copy(update={"user": user, "subject": "Dossier <RSA> & APL"})


async def the_event(control: EmulatorControl) -> dict[str, Any]:
    [record] = await control.live_events()
    event: dict[str, Any] = record["event"]
    return event


def body_of(event: dict[str, Any]) -> str:
    content: str = event["body"]["content"]
    return content


async def nobody_mailed(control: EmulatorControl) -> None:
    stats = await control.stats()
    assert stats["attendee_messages"] == {}
    assert stats["teams_blocks_removed"] == 0


async def test_the_event_says_who_is_coming_and_how(
    handle: Handle, make_appointment: Make, control: EmulatorControl, pool: asyncpg.Pool
) -> None:
    appointment = booked(make_appointment, recording_authorised=True)
    await handle(appointment)

    event = await the_event(control)
    body = body_of(event)
    assert "Personne attendue : <strong>Jeanne &lt;b&gt;&amp; D.</strong>" in body
    assert "sous le nom « Jeanne &lt;b&gt;&amp; D. »" in body
    assert "<b>" not in body and "dupont" not in body.lower()  # the initial only
    assert "Appareil : tablette" in body
    assert "Objet : Dossier &lt;RSA&gt; &amp; APL" in body
    assert "Enregistrement : autorisé par la personne" in body
    page = f"{BOOKING}/conseiller/rendez-vous/{appointment.appointment_id}"
    assert f'<a href="{page}">{page}</a>' in body
    assert event["attendees"] == []  # the person gets our email, never Outlook's
    assert event["onlineMeeting"]["joinUrl"] in body  # Outlook's Teams block, below ours
    row = await pool.fetchrow(
        "SELECT first_name, last_initial, device FROM meetings WHERE appointment_id = $1",
        appointment.appointment_id,
    )
    assert row is not None
    assert dict(row) == {"first_name": "Jeanne <b>&", "last_initial": "D.", "device": "tablet"}
    await nobody_mailed(control)


async def test_a_contact_correction_rewrites_the_body_mailing_no_one(
    handle: Handle, make_appointment: Make, control: EmulatorControl
) -> None:
    appointment = booked(make_appointment)
    await handle(appointment)
    join_url = (await the_event(control))["onlineMeeting"]["joinUrl"]

    person = Person(
        first_name="Jeanne-Marie",
        last_name="Lefèvre",
        email="jm.lefevre@example.org",
        device=Device.COMPUTER,
    )
    await handle(
        ContactCorrected(
            correlation_id=appointment.correlation_id,
            appointment_id=appointment.appointment_id,
            revision=2,
            user=person,
        )
    )

    event = await the_event(control)
    body = body_of(event)
    assert "Personne attendue : <strong>Jeanne-Marie L.</strong>" in body
    assert "Appareil : ordinateur" in body
    assert "Jeanne &lt;b&gt;" not in body and "tablette" not in body
    assert "Enregistrement : non autorisé" in body
    assert body.count(join_url) == 1  # the Teams block kept, once
    assert event["onlineMeeting"]["joinUrl"] == join_url
    assert event["subject"] == appointment.subject
    assert await control.calls("graph.events.update") == 1
    await nobody_mailed(control)


async def test_a_withdrawal_rewrites_the_recording_line_mailing_no_one(
    handle: Handle, make_appointment: Make, control: EmulatorControl, changes: type[Changes]
) -> None:
    appointment = booked(make_appointment, recording_authorised=True)
    await handle(appointment)
    join_url = (await the_event(control))["onlineMeeting"]["joinUrl"]

    await handle(changes.withdrawn(appointment))

    body = body_of(await the_event(control))
    assert "Enregistrement : non autorisé" in body
    assert "autorisé par la personne" not in body
    assert "Jeanne &lt;b&gt;&amp; D." in body and "Appareil : tablette" in body
    assert body.count(join_url) == 1
    [meeting] = await control.online_meetings()
    assert meeting["meeting"]["allowRecording"] is False
    await nobody_mailed(control)


async def test_a_reschedule_moves_the_event_and_keeps_what_it_says(
    handle: Handle, make_appointment: Make, control: EmulatorControl, changes: type[Changes]
) -> None:
    appointment = booked(make_appointment)
    await handle(appointment)
    before = body_of(await the_event(control))

    await handle(changes.rescheduled(appointment, LATER))

    [record] = await control.live_events()
    assert record["start_utc"].startswith("2031-03-11T10:00:00")
    assert body_of(record["event"]) == before
    await nobody_mailed(control)


async def test_erasure_empties_the_event_and_the_row_of_the_person(
    handle: Handle, make_appointment: Make, control: EmulatorControl, pool: asyncpg.Pool
) -> None:
    appointment = booked(make_appointment, recording_authorised=True)
    await handle(appointment)
    join_url = (await the_event(control))["onlineMeeting"]["joinUrl"]

    await handle(
        PersonalDataErasureRequested(
            correlation_id=appointment.correlation_id,
            appointment_id=appointment.appointment_id,
            revision=2,
            erasure_id=uuid.uuid4(),
            requested_by="dpo@caf.example",
        )
    )

    event = await the_event(control)
    body = body_of(event)
    assert event["subject"] == ERASED_SUBJECT
    assert "Personne attendue : données personnelles effacées" in body
    for gone in ("Jeanne", "D.</strong>", "tablette", "RSA"):
        assert gone not in body
    assert "Enregistrement : autorisé par la personne" in body
    assert f"{BOOKING}/conseiller/rendez-vous/{appointment.appointment_id}" in body
    assert body.count(join_url) == 1
    row = await pool.fetchrow(
        "SELECT subject, first_name, last_initial, device FROM meetings WHERE appointment_id = $1",
        appointment.appointment_id,
    )
    assert row is not None and set(dict(row).values()) == {None}
    await nobody_mailed(control)


async def test_the_emulator_sees_attendee_mail_and_a_lost_teams_block(
    handle: Handle, make_appointment: Make, control: EmulatorControl, graph: GraphClient
) -> None:
    """The checks above fail when a PATCH names attendees or drops the Teams block."""
    appointment = make_appointment()
    await handle(appointment)
    [record] = await control.live_events()
    path = f"/events/{record['event_id']}"
    attendee = {"emailAddress": {"address": "marie.payet@example.org"}, "type": "required"}
    await graph.call(Call("t", "PATCH", appointment.advisor.id, path, {"attendees": [attendee]}))
    body = {"body": {"contentType": "HTML", "content": "<p>sans le bloc Teams</p>"}}
    await graph.call(Call("t", "PATCH", appointment.advisor.id, path, body))

    stats = await control.stats()
    assert stats["attendee_messages"] == {"update": 2}
    assert stats["teams_blocks_removed"] == 1
    with pytest.raises(AssertionError):
        await nobody_mailed(control)


def test_the_initial_and_the_teams_block_are_read_carefully() -> None:
    assert last_initial("dupont") == "D."
    assert last_initial(" d'Almeida") == "D."
    assert last_initial("Éluard") == "É."
    appointment_id = uuid.uuid4()
    rule = "_" * 40
    # A subject full of underscores, before our reference, is not taken for the Teams block.
    ours = f"<p>{rule}</p><p>Référence : {appointment_id}</p>"
    teams = f"<div><span>{rule}</span></div><div>Teams</div>"
    assert teams_block(f"<html><body>{ours}{teams}</body></html>", appointment_id) == teams
    assert teams_block(f"<html><body>{ours}</body></html>", appointment_id) == ""
