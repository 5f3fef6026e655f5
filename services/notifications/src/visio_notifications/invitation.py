"""The calendar invitation (.ics) that travels with the emails (RFC 5545 / iTIP, RFC 5546).

One UID per appointment for its whole life and SEQUENCE = the appointment's revision, so each
update replaces the event in the person's calendar instead of adding a second one, and a
cancellation (METHOD:CANCEL, STATUS:CANCELLED) removes it. The organizer is the Caf's sending
address, not the advisor, so an automatic calendar reply goes nowhere personal; the person is
the only attendee, with RSVP=FALSE (nobody waits for an answer).
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, date, datetime, timedelta, tzinfo
from email.headerregistry import Address
from typing import Literal

import icalendar
from icalendar.timezone import tzid_from_tzinfo
from visio_shared import AppointmentRequested
from visio_shared.caf_directory import caf_directory

from visio_notifications import wording
from visio_notifications.mime import Mailbox

Method = Literal["REQUEST", "CANCEL"]


def event_uid(appointment: AppointmentRequested, domain: str) -> str:
    return f"{appointment.appointment_id}@{domain}"


def build_invitation(
    appointment: AppointmentRequested,
    join_url: str | None,
    *,
    method: Method,
    start: datetime,
    organizer: Mailbox | Address,
    attendee: Mailbox | Address,
    domain: str,
    now: datetime,
) -> bytes:
    """`start` is already in the appointment's own time zone (a ZoneInfo), which gives DTSTART
    its TZID and the calendar its VTIMEZONE.

    The lines are written here, not by icalendar's objects (adding each property to them, then
    serialising them, took some 0.4 ms an email, 8.6 % of the service's CPU), but as icalendar
    writes them: its property order (the canonical ones first, the others by name), its
    escaping and quoting, so that calendars see the same bytes as before. A test holds them to
    those of the icalendar-based builder, for any text, zone and method."""
    end = start + timedelta(minutes=appointment.duration_minutes)
    zone = getattr(start.tzinfo, "key", None)
    if zone is None:
        dates, vtimezone = _unnamed_zone(start, end)
    else:
        tzid = _tzid(start.tzinfo, zone)
        dates = [_date_time("DTSTART", start, tzid), _date_time("DTEND", end, tzid)]
        # The same bytes for every appointment of the zone and years: serialised once.
        vtimezone = _vtimezone_ical(zone, start.year - 1, end.year + 1)
    caf = caf_directory().get(appointment.caf_code).name
    caf = caf if caf.startswith("Caf ") else "Caf"
    description = wording.ICS_DESCRIPTION_HEAD.format(
        caf=caf, subject=appointment.subject, advisor=appointment.advisor.display_name
    )
    if method == "CANCEL":
        description += wording.ICS_CANCELLED
    elif join_url is not None:
        description += wording.ICS_JOIN.format(join_url=join_url)
    # DTSTAMP in UTC, as icalendar's `add` puts it (a naive one is taken as UTC).
    stamp = now.astimezone(UTC) if now.tzinfo is not None else now
    lines = [
        "SUMMARY:" + text(f"{wording.ICS_SUMMARY.format(caf=caf)} : {appointment.subject}"),
        *dates,
        f"DTSTAMP:{_ical_date_time(stamp)}Z",
        "UID:" + text(event_uid(appointment, domain)),
        f"SEQUENCE:{appointment.revision}",
        f"ATTENDEE;CN={_cn(attendee)};{_ATTENDEE_PARAMETERS}:mailto:{attendee.addr_spec}",
        "DESCRIPTION:" + text(description),
    ]
    if method == "REQUEST" and join_url is not None:
        # In all three places: each calendar app shows a different one as the clickable link.
        lines.append("LOCATION:" + text(join_url))
    lines += [
        f"ORGANIZER;CN={_cn(organizer)}:mailto:{organizer.addr_spec}",
        "STATUS:CANCELLED" if method == "CANCEL" else "STATUS:CONFIRMED",
        "TRANSP:OPAQUE",
    ]
    if method == "REQUEST" and join_url is not None:
        lines.append(f"URL:{join_url}")  # a URI: written as it is, not escaped
    event = b"".join(fold(line) + b"\r\n" for line in lines)
    return b"".join(
        (
            _CALENDAR_HEAD,
            method.encode(),
            b"\r\n",
            vtimezone,
            b"BEGIN:VEVENT\r\n",
            event,
            _ALARM if method == "REQUEST" else b"",
            b"END:VEVENT\r\nEND:VCALENDAR\r\n",
        )
    )


def text(value: str) -> str:
    """A TEXT value escaped as icalendar escapes it (RFC 5545, 3.3.11): backslash, semicolon,
    comma, and a line break (CRLF, LF or a lone CR) written `\\n`. Before all that, icalendar
    reads a backslash and a capital N already in the text as a line break: so is it here, or
    the bytes would differ from icalendar's for a subject like « C:\\Notes »."""
    return (
        value.replace("\\N", "\n")
        .replace("\\", "\\\\")
        .replace(";", "\\;")
        .replace(",", "\\,")
        .replace("\r\n", "\\n")
        .replace("\n", "\\n")
        .replace("\r", "\\n")
    )


def parameter(value: str, *, cn: bool = False) -> str:
    """A parameter value as icalendar writes it: RFC 6868's escapes (^ as ^^, a line break as
    ^n, a double quote as ^'), then in double quotes when it holds , ; : or ’ — and for CN also
    a space or an apostrophe, looked for in the value as given."""
    escaped = (
        value.replace("^", "^^")
        .replace("\r\n", "^n")
        .replace("\r", "^n")
        .replace("\n", "^n")
        .replace('"', "^'")
    )
    quoted = _QUOTED.search(escaped) is not None or (cn and (" " in value or "'" in value))
    return f'"{escaped}"' if quoted else escaped


_QUOTED = re.compile("[,;:’]")


def _cn(address: Mailbox | Address) -> str:
    """The common name: the display name, or the address when there is none."""
    return parameter(address.display_name or address.addr_spec, cn=True)


def _date_time(name: str, value: datetime, tzid: str | None) -> str:
    """DTSTART or DTEND in its zone: with its TZID, or in UTC with a Z and no TZID (RFC 5545,
    3.2.19), as icalendar writes a date-time of a zone it names UTC."""
    if tzid == "UTC":
        return f"{name}:{_ical_date_time(value)}Z"
    if tzid is None:
        return f"{name}:{_ical_date_time(value)}"
    return f"{name};TZID={parameter(tzid)}:{_ical_date_time(value)}"


def _ical_date_time(value: datetime) -> str:
    """The local date and time to the second, as icalendar formats them (no strftime: it pads
    years before 1000 differently from one platform to another)."""
    return (
        f"{value.year:04}{value.month:02}{value.day:02}"
        f"T{value.hour:02}{value.minute:02}{value.second:02}"
    )


_TZIDS: dict[str, str | None] = {}  # a zone's key → its TZID


def _tzid(zone: tzinfo | None, key: str) -> str | None:
    """The TZID icalendar gives a zone with a key (a ZoneInfo; dateutil's have one too): the
    key, but UTC for a zone that is UTC under another name (Etc/UTC, Zulu…). Finding it walks
    icalendar's table of equivalent zones, so once per key (not per zone object: dateutil's
    cannot be hashed)."""
    if key not in _TZIDS:
        _TZIDS[key] = tzid_from_tzinfo(zone)
    return _TZIDS[key]


def _unnamed_zone(start: datetime, end: datetime) -> tuple[list[str], bytes]:
    """DTSTART, DTEND and the VTIMEZONE of a start whose zone has no key (none today: a fixed
    offset, pytz's zones, a naive time): icalendar names the zone and works its VTIMEZONE out,
    as it did when it wrote the whole calendar; computed, not cached."""
    event = icalendar.Event()
    event.add("dtstart", start)
    event.add("dtend", end)
    calendar = icalendar.Calendar()
    calendar.add_component(event)
    calendar.add_missing_timezones()
    dates = [str(event.content_line(name, event[name])) for name in ("DTSTART", "DTEND")]
    return dates, b"".join(to_ical(timezone) for timezone in calendar.timezones)


@functools.lru_cache(maxsize=64)
def _vtimezone_ical(zone: str, first_year: int, last_year: int) -> bytes:
    timezone: icalendar.Timezone = _vtimezone(zone, first_year, last_year)
    ical: bytes = timezone.to_ical()
    return ical


@functools.lru_cache(maxsize=64)
def _vtimezone(zone: str, first_year: int, last_year: int) -> icalendar.Timezone:
    """The zone's VTIMEZONE with only the transitions of the years around the appointment (one
    from 1970 would be kilobytes). Working the transitions out is the costliest part of an
    email, so each (zone, years) is computed once; the component is only ever read."""
    return icalendar.Timezone.from_tzid(
        zone, first_date=date(first_year, 1, 1), last_date=date(last_year, 12, 31)
    )


def to_ical(component: icalendar.Component) -> bytes:
    """`component.to_ical()`, with its content lines folded here (`fold`): icalendar folds a
    line character by character, a tenth of the cost of composing an email."""
    return b"".join(fold(line) + b"\r\n" for line in component.content_lines() if line)


def fold(line: str) -> bytes:
    """A content line in UTF-8, folded as icalendar folds it (RFC 5545, 3.1): a line of 75
    octets or more is cut into pieces of at most 74, each between two characters, a backslash
    or caret that would end a piece (but its first character) starting the next one instead,
    and the pieces joined with CRLF and a space. Here a piece is cut in the bytes, stepping
    back off UTF-8 continuation bytes, instead of counting every character."""
    data = line.encode("utf-8")
    pieces: list[bytes] = []
    start = 0
    while len(data) - start >= 75:
        end = start + 74
        while 0x80 <= data[end] < 0xC0:  # inside a character: it goes to the next piece
            end -= 1
        if end - start > 1 and data[end - 1] in b"\\^":
            end -= 1
        pieces.append(data[start:end])
        start = end
    pieces.append(data[start:])
    return b"\r\n ".join(pieces)


# What never changes, written once (here, after `fold` and `text`), in icalendar's order:
# VERSION and PRODID before METHOD (its canonical order), the attendee's parameters sorted by
# name after CN, the alarm's properties by name.
_CALENDAR_HEAD = b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Caf//Visio RDV//FR\r\nMETHOD:"
_ATTENDEE_PARAMETERS = "PARTSTAT=NEEDS-ACTION;ROLE=REQ-PARTICIPANT;RSVP=FALSE"
# The reminder, 15 minutes before the start (TRIGGER is an RFC 5545 duration).
_ALARM = (
    b"BEGIN:VALARM\r\nACTION:DISPLAY\r\n"
    + fold("DESCRIPTION:" + text(wording.ICS_ALARM))
    + b"\r\nTRIGGER:-PT15M\r\nEND:VALARM\r\n"
)
