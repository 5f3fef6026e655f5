"""French dates and times, written without a locale, in the appointment's own time zone."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest
from visio_notifications import wording
from visio_notifications.mailer import confirmation_context
from visio_shared import MeetingReady


def test_french_date_and_time() -> None:
    moment = datetime(2026, 12, 3, 10, 0, tzinfo=ZoneInfo("Europe/Paris"))
    assert wording.french_date(moment.date()) == "jeudi 3 décembre"
    assert wording.french_date(moment.date(), with_year=True) == "jeudi 3 décembre 2026"
    assert wording.french_time(moment) == "10 h 00"
    assert wording.french_datetime(moment) == "jeudi 3 décembre à 10 h 00"


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (date(2026, 12, 1), "mardi 1er décembre"),
        (date(2027, 2, 14), "dimanche 14 février"),
        (date(2026, 8, 15), "samedi 15 août"),
        (date(2026, 1, 5), "lundi 5 janvier"),
    ],
)
def test_french_dates_all_the_way(day: date, expected: str) -> None:
    assert wording.french_date(day) == expected


def test_minutes_are_two_digits_hours_are_not() -> None:
    assert wording.french_time(datetime(2026, 12, 3, 9, 5)) == "9 h 05"
    assert wording.french_time(datetime(2026, 12, 3, 0, 0)) == "0 h 00"


def test_durations() -> None:
    assert wording.duration_text(30) == "30 minutes"
    assert wording.duration_text(60) == "1 heure"
    assert wording.duration_text(90) == "1 heure 30"
    assert wording.duration_text(120) == "2 heures"


def _when(new_appointment, settings, **fields) -> tuple[str, str, str]:
    appointment = new_appointment(**fields)
    meeting = MeetingReady(
        appointment_id=appointment.appointment_id,
        correlation_id=appointment.correlation_id,
        revision=1,
        join_url="https://teams.microsoft.com/l/meetup-join/x",
        graph_event_id="g",
        advisor_id="a",
    )
    context = confirmation_context(appointment, meeting, settings)
    return context["subject"], context["when_line"], context["zone"]


def test_reunion_shows_its_own_time_and_says_so(new_appointment, settings) -> None:
    subject, when, zone = _when(
        new_appointment,
        settings,
        start=datetime.fromisoformat("2026-12-03T10:00:00+04:00"),
        timezone="Indian/Reunion",
        caf_code="974",
    )
    assert subject == "Votre rendez-vous visio avec la Caf le jeudi 3 décembre à 10 h 00"
    assert "jeudi 3 décembre 2026 à 10 h 00" in when
    assert zone == "heure de La Réunion"
    assert "heure de La Réunion" in when


def test_guadeloupe_shows_its_local_time(new_appointment, settings) -> None:
    # 14:00 UTC is 10:00 in Guadeloupe (UTC-4) and 15:00 in Paris.
    subject, _, zone = _when(
        new_appointment,
        settings,
        start=datetime.fromisoformat("2026-12-03T14:00:00+00:00"),
        timezone="America/Guadeloupe",
        caf_code="971",
    )
    assert subject.endswith("le jeudi 3 décembre à 10 h 00")
    assert zone == "heure de la Guadeloupe"


@pytest.mark.parametrize(
    ("caf_code", "timezone", "label"),
    [
        ("972", "America/Martinique", "heure de la Martinique"),
        ("973", "America/Cayenne", "heure de la Guyane"),
        ("976", "Indian/Mayotte", "heure de Mayotte"),
        ("750", "Europe/Paris", "heure de Paris"),
    ],
)
def test_every_overseas_zone_is_named(new_appointment, settings, caf_code, timezone, label) -> None:
    _, when, zone = _when(new_appointment, settings, caf_code=caf_code, timezone=timezone)
    assert zone == label
    assert label in when


def test_the_day_can_change_with_the_zone(new_appointment, settings) -> None:
    # 22:30 UTC on Thursday is 02:30 on Friday in La Réunion.
    subject, _, _ = _when(
        new_appointment,
        settings,
        start=datetime.fromisoformat("2026-12-03T22:30:00+00:00"),
        timezone="Indian/Reunion",
        caf_code="974",
    )
    assert subject.endswith("le vendredi 4 décembre à 2 h 30")


def test_summer_time_in_paris(new_appointment, settings) -> None:
    subject, _, _ = _when(
        new_appointment, settings, start=datetime.fromisoformat("2026-07-01T08:00:00+00:00")
    )
    assert subject.endswith("le mercredi 1er juillet à 10 h 00")


def test_an_unknown_zone_falls_back_to_the_cafs_own(new_appointment, settings) -> None:
    _, _, zone = _when(new_appointment, settings, caf_code="976", timezone="Not/AZone")
    assert zone == "heure de Mayotte"
