"""Dates and times as the emails and pages say them, in French, in the appointment's own time zone.

Babel writes the words (the machine's locale is not French, and need not be). Two French habits
its patterns do not know are added here: « 1er » for the first of the month, and the « 10 h 00 »
style of time used in letters from the administration.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale
from babel.dates import format_date, get_timezone_name
from visio_shared import OVERSEAS_CAFS, expected_timezone

# Parsed once: given as a name, Babel parses the locale again on every call (a tenth of the
# cost of composing an email, which says five or six dates).
LOCALE = Locale.parse("fr_FR")
PARIS = "Europe/Paris"

_LABELS = {caf.timezone: caf.time_label for caf in OVERSEAS_CAFS.values()} | {
    PARIS: "heure de Paris"
}
_FIRST_OF_MONTH = re.compile(r"^(\S+) 1 ")


def _first_is_1er(text: str) -> str:
    return _FIRST_OF_MONTH.sub(r"\1 1er ", text)


def french_date(day: date | datetime, *, with_year: bool = False) -> str:
    """`jeudi 3 décembre`, `mardi 1er décembre 2026`; a moment's date where it stands (its own
    zone: the words name only the day, so they are the words of its local date)."""
    return _french_date(day.date() if isinstance(day, datetime) else day, with_year)


@lru_cache(maxsize=1024)
def _french_date(day: date, with_year: bool) -> str:
    # Cached by day: an email says five or six dates, the same few days across thousands of
    # emails, and Babel spends a few hundredths of a millisecond on each.
    pattern = "EEEE d MMMM y" if with_year else "EEEE d MMMM"
    return _first_is_1er(format_date(day, pattern, locale=LOCALE))


def french_time(moment: datetime) -> str:
    """`10 h 00`, `9 h 05`: the hour of its own zone without a leading zero, two-digit minutes
    (Babel's `H 'h' mm`, which a test compares it with for every minute of a day)."""
    return f"{moment.hour} h {moment.minute:02d}"


def french_datetime(moment: datetime, *, with_year: bool = False) -> str:
    """`jeudi 3 décembre à 10 h 00`."""
    return f"{french_date(moment, with_year=with_year)} à {french_time(moment)}"


def relative_day(moment: datetime, now: datetime) -> str:
    """`aujourd'hui`, `demain`, else `le jeudi 3 décembre`, as seen in the appointment's zone."""
    zone = moment.tzinfo
    days = (moment.date() - now.astimezone(zone).date()).days
    if days == 0:
        return "aujourd'hui"
    if days == 1:
        return "demain"
    return f"le {french_date(moment)}"


def appointment_zone(timezone: str, caf_code: str) -> ZoneInfo:
    """The appointment's own time zone; if it is not a known zone, its Caf's."""
    for name in (timezone, expected_timezone(caf_code)):
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return ZoneInfo(PARIS)


def zone_label(zone: ZoneInfo) -> str:
    """`heure de La Réunion`; a zone no Caf uses gets Babel's French name for it."""
    return _LABELS.get(zone.key) or get_timezone_name(zone, locale=LOCALE)


def duration_text(minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    if not hours:
        return f"{minutes} minutes"
    text = f"{hours} heure" + ("s" if hours > 1 else "")
    return f"{text} {rest:02d}" if rest else text
