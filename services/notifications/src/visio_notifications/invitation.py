"""The calendar invitation (.ics) that travels with the emails (RFC 5545 / iTIP, RFC 5546).

One UID per appointment for its whole life and SEQUENCE = the appointment's revision, so each
update replaces the event in the person's calendar instead of adding a second one, and a
cancellation (METHOD:CANCEL, STATUS:CANCELLED) removes it. The organizer is the Caf's sending
address, not the advisor, so an automatic calendar reply goes nowhere personal; the person is
the only attendee, with RSVP=FALSE (nobody waits for an answer).
"""

from __future__ import annotations

import functools
from datetime import date, datetime, timedelta
from email.headerregistry import Address
from typing import Literal

import icalendar
from visio_shared import AppointmentRequested
from visio_shared.caf_directory import caf_directory

from visio_notifications import wording

Method = Literal["REQUEST", "CANCEL"]
ALARM_BEFORE = timedelta(minutes=15)


def event_uid(appointment: AppointmentRequested, domain: str) -> str:
    return f"{appointment.appointment_id}@{domain}"


def build_invitation(
    appointment: AppointmentRequested,
    join_url: str | None,
    *,
    method: Method,
    start: datetime,
    organizer: Address,
    attendee: Address,
    domain: str,
    now: datetime,
) -> bytes:
    """`start` is already in the appointment's own time zone (a ZoneInfo), which gives DTSTART
    its TZID and the calendar its VTIMEZONE."""
    end = start + timedelta(minutes=appointment.duration_minutes)

    calendar = icalendar.Calendar()
    calendar.add("prodid", "-//Caf//Visio RDV//FR")
    calendar.add("version", "2.0")
    calendar.add("method", method)

    event = icalendar.Event()
    event.add("uid", event_uid(appointment, domain))
    event.add("sequence", appointment.revision)
    event.add("dtstamp", now)
    event.add("dtstart", start)
    event.add("dtend", end)
    caf = caf_directory().get(appointment.caf_code).name
    caf = caf if caf.startswith("Caf ") else "Caf"
    event.add("summary", f"{wording.ICS_SUMMARY.format(caf=caf)} : {appointment.subject}")
    event.add("status", "CANCELLED" if method == "CANCEL" else "CONFIRMED")
    event.add("transp", "OPAQUE")
    description = wording.ICS_DESCRIPTION_HEAD.format(
        caf=caf, subject=appointment.subject, advisor=appointment.advisor.display_name
    )
    if method == "CANCEL":
        description += wording.ICS_CANCELLED
    elif join_url is not None:
        # In all three places: each calendar app shows a different one as the clickable link.
        event.add("location", join_url)
        event.add("url", join_url)
        description += wording.ICS_JOIN.format(join_url=join_url)
    event.add("description", description)
    event.add(
        "organizer",
        f"mailto:{organizer.addr_spec}",
        parameters={"CN": organizer.display_name or organizer.addr_spec},
    )
    event.add(
        "attendee",
        f"mailto:{attendee.addr_spec}",
        parameters={
            "CN": attendee.display_name or attendee.addr_spec,
            "ROLE": "REQ-PARTICIPANT",
            "PARTSTAT": "NEEDS-ACTION",
            "RSVP": "FALSE",
        },
    )
    if method == "REQUEST":
        alarm = icalendar.Alarm()
        alarm.add("action", "DISPLAY")
        alarm.add("trigger", -ALARM_BEFORE)
        alarm.add("description", wording.ICS_ALARM)
        event.add_component(alarm)
    zone = getattr(start.tzinfo, "key", None)
    calendar.add_component(event)
    if zone is None:  # not a named zone (none today): computed, not cached
        calendar.add_missing_timezones()
        return to_ical(calendar)
    # The VTIMEZONE stands before the event, as `add_component` would place it; its bytes are
    # the same for every appointment of the zone and years, so they are serialised once.
    serialised = to_ical(calendar)
    head, event_mark, rest = serialised.partition(b"BEGIN:VEVENT\r\n")
    return head + _vtimezone_ical(zone, start.year - 1, end.year + 1) + event_mark + rest


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
