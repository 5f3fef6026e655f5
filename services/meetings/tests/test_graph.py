"""The Graph client's calls against the emulator over real HTTPS: what reaches Graph, and how
its refusals are named."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from visio_meetings.calls import CANCEL_COMMENT
from visio_meetings.graph import GraphClient
from visio_meetings.payloads import (
    APPOINTMENT_PROPERTY_ID,
    MEETING_KEY_PROPERTY_ID,
    event_times,
    join_web_url_filter,
    meeting_key,
    meeting_key_filter,
)
from visio_meetings.refusals import GraphRefused
from visio_shared import AppointmentRequested

if TYPE_CHECKING:
    from conftest import Changes, EmulatorControl

ADVISOR = "a1b2c3d4-0000-4000-8000-00000000ad01"

Make = Callable[..., AppointmentRequested]


async def test_the_event_carries_its_keys_its_zone_and_mails_nobody(
    graph: GraphClient, control: EmulatorControl, make_appointment: Make, changes: type[Changes]
) -> None:
    appointment = make_appointment()
    key = meeting_key(appointment.appointment_id)

    created = await graph.create_event(changes.spec_of(appointment))

    [record] = await control.events()
    assert record["transaction_id"] == key
    assert record["external_id"] == str(appointment.appointment_id)
    assert record["single_value_extended_properties"] == [
        {"id": APPOINTMENT_PROPERTY_ID, "value": str(appointment.appointment_id)},
        {"id": MEETING_KEY_PROPERTY_ID, "value": key},
    ]
    event = record["event"]
    assert event["attendees"] == []
    assert event["isOnlineMeeting"] is True
    assert event["onlineMeetingProvider"] == "teamsForBusiness"
    assert event["allowNewTimeProposals"] is False
    assert event["responseRequested"] is False
    assert "Rendez-vous Visio RDV" in event["body"]["content"]
    assert "salle d'attente" in event["body"]["content"]
    # 09:30 in La Réunion, sent as such under its Windows name; 05:30 UTC, 45 minutes long.
    assert event["originalStartTimeZone"] == "Mauritius Standard Time"
    assert record["start_utc"].startswith("2031-03-04T05:30:00")
    assert record["end_utc"].startswith("2031-03-04T06:15:00")
    assert created["id"] == record["event_id"]
    assert created["onlineMeeting"]["joinUrl"] == record["join_url"]


async def test_the_same_key_brings_back_the_same_event(
    graph: GraphClient, control: EmulatorControl, make_appointment: Make, changes: type[Changes]
) -> None:
    spec = changes.spec_of(make_appointment())
    first = await graph.create_event(spec)
    again = await graph.create_event(spec)
    found = await graph.find_event(ADVISOR, spec.key)

    assert again["id"] == first["id"]
    assert found is not None
    assert found["id"] == first["id"]
    assert found["onlineMeeting"]["joinUrl"] == first["onlineMeeting"]["joinUrl"]
    stats = await control.stats()
    assert stats["events_total"] == 1
    assert stats["transaction_replays"] == {spec.key: 1}
    # A change of advisor's key names another meeting, even in the same calendar.
    assert await graph.find_event(ADVISOR, meeting_key(spec.appointment_id, 3)) is None


async def test_meeting_options_are_set_and_dial_in_details_come_back(
    graph: GraphClient, control: EmulatorControl, make_appointment: Make, changes: type[Changes]
) -> None:
    created = await graph.create_event(changes.spec_of(make_appointment()))
    meeting = await graph.find_online_meeting(ADVISOR, created["onlineMeeting"]["joinUrl"])
    assert meeting is not None

    answer = await graph.update_meeting_options(ADVISOR, meeting["id"], recording_authorised=True)

    [stored] = await control.online_meetings()
    options: dict[str, Any] = stored["meeting"]
    assert options["allowRecording"] is True
    assert options["allowTranscription"] is True
    assert options["recordAutomatically"] is False
    assert options["allowedPresenters"] == "organizer"
    assert options["lobbyBypassSettings"]["scope"] == "organization"
    assert (
        answer["joinMeetingIdSettings"]["passcode"] == options["joinMeetingIdSettings"]["passcode"]
    )
    assert answer["audioConferencing"]["conferenceId"]


async def test_a_short_join_url_is_just_as_opaque(
    graph: GraphClient, control: EmulatorControl, make_appointment: Make, changes: type[Changes]
) -> None:
    await control.join_url_style("short")
    created = await graph.create_event(changes.spec_of(make_appointment()))
    join_url = created["onlineMeeting"]["joinUrl"]
    assert "/meet/" in join_url

    meeting = await graph.find_online_meeting(ADVISOR, join_url)

    assert meeting is not None
    assert meeting["joinWebUrl"] == join_url


async def test_an_unknown_join_url_finds_nothing(
    graph: GraphClient, control: EmulatorControl
) -> None:
    found = await graph.find_online_meeting(
        ADVISOR, "https://teams.microsoft.com/l/meetup-join/19%3ameeting_x'y%40thread.v2/0"
    )
    assert found is None
    assert (await control.stats())["responses"]["graph.onlineMeetings.list"] == {"200": 1}


async def test_moving_an_event_keeps_its_link(
    graph: GraphClient, control: EmulatorControl, make_appointment: Make, changes: type[Changes]
) -> None:
    appointment = make_appointment(timezone="Europe/Paris")
    created = await graph.create_event(changes.spec_of(appointment))
    summer = dt.datetime(2031, 7, 1, 14, 0, tzinfo=dt.UTC)

    moved = await graph.move_event(ADVISOR, created["id"], summer, 30, "Europe/Paris")

    assert moved["onlineMeeting"]["joinUrl"] == created["onlineMeeting"]["joinUrl"]
    [record] = await control.events()
    assert record["start_utc"].startswith("2031-07-01T14:00:00")
    assert record["end_utc"].startswith("2031-07-01T14:30:00")
    [meeting] = await control.online_meetings()
    assert meeting["meeting"]["startDateTime"].startswith("2031-07-01T14:00:00")


async def test_cancelling_twice_is_done_once(
    graph: GraphClient, control: EmulatorControl, make_appointment: Make, changes: type[Changes]
) -> None:
    created = await graph.create_event(changes.spec_of(make_appointment()))

    assert await graph.cancel_event(ADVISOR, created["id"]) is True
    assert await graph.cancel_event(ADVISOR, created["id"]) is False  # gone already

    [record] = await control.events()
    assert record["is_deleted"] is True
    assert record["cancel_comment"] == CANCEL_COMMENT
    assert (await control.stats())["responses"]["graph.events.cancel"] == {"202": 1, "404": 1}


async def test_an_access_policy_refusal_is_named_for_the_operator(
    graph: GraphClient, control: EmulatorControl, make_appointment: Make, changes: type[Changes]
) -> None:
    await control.access_policy(allowed_user_ids=[str(uuid.uuid4())])

    with pytest.raises(GraphRefused) as caught:
        await graph.create_event(changes.spec_of(make_appointment()))

    assert caught.value.status == 403
    assert caught.value.code == "ErrorAccessDenied"
    assert caught.value.reason == "access_policy_missing"
    assert "application access policy" in caught.value.detail
    assert "AccessPolicy" in caught.value.message


async def test_an_unknown_advisor_is_named_for_the_operator(
    graph: GraphClient, make_appointment: Make, control: EmulatorControl, changes: type[Changes]
) -> None:
    # A well-formed object id that is no user of the tenant: only Graph can tell.
    nobody = "0000dead-0000-4000-8000-00000000beef"
    await control.mailbox(nobody, exists=False)
    with pytest.raises(GraphRefused) as caught:
        await graph.create_event(changes.spec_of(make_appointment(advisor_id=nobody)))
    assert caught.value.reason == "advisor_not_found"


def test_the_filters_are_quoted_for_odata_and_for_the_url() -> None:
    url = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_a'b%40thread.v2/0?context=%7b%7d"
    assert join_web_url_filter(url) == (
        "$filter=JoinWebUrl%20eq%20'https%3A%2F%2Fteams.microsoft.com%2Fl%2Fmeetup-join%2F"
        "19%253ameeting_a''b%2540thread.v2%2F0%3Fcontext%3D%257b%257d'"
    )
    assert meeting_key_filter("k'1") == (
        "$filter=singleValueExtendedProperties%2Fany%28ep%3A%20ep%2Fid%20eq%20'String%20"
        "%7Beb93a35d-1aac-41ef-9eaa-038cfa09ce2b%7D%20Name%20VisioRdvMeetingKey'%20and%20"
        "ep%2Fvalue%20eq%20'k''1'%29"
    )


def test_times_are_wall_clock_in_the_appointments_zone_or_utc() -> None:
    start = dt.datetime(2031, 7, 1, 8, 0, tzinfo=dt.UTC)
    assert event_times(start, 45, "America/Cayenne") == {
        "start": {"dateTime": "2031-07-01T05:00:00", "timeZone": "SA Eastern Standard Time"},
        "end": {"dateTime": "2031-07-01T05:45:00", "timeZone": "SA Eastern Standard Time"},
    }
    # Summer time in Paris; a zone without a Windows name goes as UTC.
    assert event_times(start, 30, "Europe/Paris")["start"]["dateTime"] == "2031-07-01T10:00:00"
    assert event_times(start, 30, "Asia/Tokyo")["start"] == {
        "dateTime": "2031-07-01T08:00:00",
        "timeZone": "UTC",
    }
