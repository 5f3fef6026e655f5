"""Dates and times as the emails say them: French words from Babel (the machine's locale is
not French), « 1er », « 10 h 00 », in the appointment's own time zone, said by name."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from babel.dates import format_datetime
from visio_runtime import french_dates as dates

REUNION = ZoneInfo("Indian/Reunion")


def test_french_date_and_time() -> None:
    moment = datetime(2026, 12, 3, 10, 0, tzinfo=ZoneInfo("Europe/Paris"))
    assert dates.french_date(moment) == "jeudi 3 décembre"
    assert dates.french_date(moment, with_year=True) == "jeudi 3 décembre 2026"
    assert dates.french_time(moment) == "10 h 00"
    assert dates.french_datetime(moment) == "jeudi 3 décembre à 10 h 00"


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (date(2026, 12, 1), "mardi 1er décembre"),
        (date(2027, 2, 14), "dimanche 14 février"),
        (date(2026, 8, 15), "samedi 15 août"),
        (date(2026, 1, 11), "dimanche 11 janvier"),  # « 11 » stays 11, only 1 becomes 1er
    ],
)
def test_french_dates_all_the_way(day: date, expected: str) -> None:
    assert dates.french_date(day) == expected


def test_minutes_are_two_digits_hours_are_not() -> None:
    assert dates.french_time(datetime(2026, 12, 3, 9, 5, tzinfo=UTC)) == "9 h 05"
    assert dates.french_time(datetime(2026, 12, 3, 0, 0, tzinfo=UTC)) == "0 h 00"


def test_times_are_babels_for_every_minute_of_a_day() -> None:
    # french_time writes the « 10 h 00 » itself; Babel's pattern is the reference.
    start = datetime(2026, 3, 29, 0, 0, tzinfo=ZoneInfo("Europe/Paris"))  # a day of 23 hours
    for minute in range(24 * 60):
        moment = (start + timedelta(minutes=minute)).astimezone(REUNION)
        expected = format_datetime(moment, "H 'h' mm", tzinfo=moment.tzinfo, locale=dates.LOCALE)
        assert dates.french_time(moment) == expected


@pytest.mark.parametrize("zone", ["Europe/Paris", "Indian/Reunion", "America/Cayenne", "UTC"])
def test_dates_of_moments_are_babels_in_their_own_zone(zone: str) -> None:
    # Cached by local date: every hour of two years, the same words as Babel's on the moment.
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for hour in range(0, 2 * 366 * 24, 7):
        moment = (start + timedelta(hours=hour)).astimezone(ZoneInfo(zone))
        for with_year, pattern in ((False, "EEEE d MMMM"), (True, "EEEE d MMMM y")):
            babel = format_datetime(moment, pattern, tzinfo=moment.tzinfo, locale=dates.LOCALE)
            expected = babel.replace(" 1 ", " 1er ", 1) if babel.split()[1] == "1" else babel
            assert dates.french_date(moment, with_year=with_year) == expected


def test_the_time_is_the_zones_own() -> None:
    # 22:30 UTC on Thursday is 2:30 on Friday in La Réunion.
    moment = datetime(2026, 12, 3, 22, 30, tzinfo=UTC).astimezone(REUNION)
    assert dates.french_datetime(moment) == "vendredi 4 décembre à 2 h 30"


@pytest.mark.parametrize(
    ("timezone", "caf_code", "label"),
    [
        ("Indian/Reunion", "974", "heure de La Réunion"),
        ("America/Guadeloupe", "971", "heure de la Guadeloupe"),
        ("America/Martinique", "972", "heure de la Martinique"),
        ("America/Cayenne", "973", "heure de la Guyane"),
        ("Indian/Mayotte", "976", "heure de Mayotte"),
        ("Europe/Paris", "075", "heure de Paris"),
        ("Not/AZone", "976", "heure de Mayotte"),  # unknown: the Caf's own zone
    ],
)
def test_every_zone_is_named(timezone: str, caf_code: str, label: str) -> None:
    assert dates.zone_label(dates.appointment_zone(timezone, caf_code)) == label


def test_a_zone_no_caf_uses_gets_babels_french_name() -> None:
    assert dates.zone_label(ZoneInfo("Pacific/Noumea")) == "heure de la Nouvelle-Calédonie"


def test_relative_days_are_seen_from_the_appointments_zone() -> None:
    start = datetime(2026, 12, 3, 10, 0, tzinfo=REUNION)
    # 21:00 UTC on the 2nd is already the 3rd in La Réunion.
    assert dates.relative_day(start, datetime(2026, 12, 2, 21, 0, tzinfo=UTC)) == "aujourd'hui"
    assert dates.relative_day(start, datetime(2026, 12, 2, 8, 0, tzinfo=UTC)) == "demain"
    assert dates.relative_day(start, datetime(2026, 11, 30, 8, 0, tzinfo=UTC)) == (
        "le jeudi 3 décembre"
    )


def test_durations() -> None:
    assert dates.duration_text(30) == "30 minutes"
    assert dates.duration_text(60) == "1 heure"
    assert dates.duration_text(90) == "1 heure 30"
    assert dates.duration_text(120) == "2 heures"
