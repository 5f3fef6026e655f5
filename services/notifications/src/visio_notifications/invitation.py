"""The calendar invitation (.ics) that travels with the email: METHOD:REQUEST, one VEVENT whose
UID is stable across revisions and whose SEQUENCE is the revision, so a later update replaces
it in the person's calendar instead of adding a second one."""

from __future__ import annotations

from datetime import datetime, timedelta
from email.headerregistry import Address

import icalendar
from visio_shared import AppointmentRequested

from visio_notifications import wording


def event_uid(appointment: AppointmentRequested, domain: str) -> str:
    return f"{appointment.appointment_id}@{domain}"


def build_invitation(
    appointment: AppointmentRequested,
    join_url: str,
    *,
    start: datetime,
    organizer: Address,
    attendee: Address,
    domain: str,
    now: datetime,
    method: str = "REQUEST",
) -> bytes:
    """`start` is already in the appointment's own time zone (a ZoneInfo), which gives the
    DTSTART its TZID and the calendar its VTIMEZONE."""
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
    event.add("summary", f"{wording.ICS_SUMMARY} : {appointment.subject}")
    event.add("location", wording.ICS_LOCATION)
    event.add("url", join_url)
    event.add(
        "description",
        wording.ICS_DESCRIPTION.format(
            subject=appointment.subject,
            advisor=appointment.advisor.display_name,
            join_url=join_url,
        ),
    )
    event.add("status", "CONFIRMED")
    event.add("transp", "OPAQUE")
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
    calendar.add_component(event)
    # Only the transitions around the appointment: a VTIMEZONE from 1970 would be kilobytes.
    calendar.add_missing_timezones(
        first_date=start.date() - timedelta(days=366),
        last_date=end.date() + timedelta(days=366),
    )
    ical: bytes = calendar.to_ical()
    return ical
