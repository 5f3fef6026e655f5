"""The text messages, in French, written to fit one SMS in GSM-7 (`sms_encoding`): no name (a
phone's lock screen shows the text to whoever looks), no advisor, no join link (a text is
read on the phone that may not have Teams yet) — the date, the time with its zone named, and the
short link to « Mon rendez-vous », where everything else is.

Only letters GSM-7 has are used: é, è, à, never ê, â, ç, œ, « », ’ nor a non-breaking space,
any of which would turn the whole text to UCS-2 (70 characters an SMS instead of 160). The date
may still bring one in (« août »): the count then says UCS-2, and the text is no longer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from visio_runtime import french_dates as dates
from visio_shared import AppointmentRequested

PREFIX = "Caf"

CONFIRMATION = (
    "{prefix} : votre rendez-vous en visio est confirmé le {date} à {time} ({zone}). "
    "Détails : {url}"
)
REMINDER_DAYS = "{prefix} rappel : rendez-vous en visio {day} à {time} ({zone}). Détails : {url}"
REMINDER_SOON = (
    "{prefix} : votre rendez-vous en visio commence à {time} ({zone}). Pour le rejoindre : {url}"
)
RESCHEDULED = (
    "{prefix} : votre rendez-vous en visio est déplacé au {date} à {time} ({zone}). Détails : {url}"
)
ADVISOR_CHANGED = (
    "{prefix} : votre rendez-vous en visio du {date} à {time} ({zone}) a un nouveau lien, "
    "envoyé par e-mail. Détails : {url}"
)
CANCELLATION = (
    "{prefix} : votre rendez-vous en visio du {date} à {time} ({zone}) est annulé. Détails : {url}"
)

# A reminder sent this long before the start or less says « commence à »: it is today.
SOON_MINUTES = 6 * 60


@dataclass(frozen=True)
class SmsText:
    kind: str
    text: str


def sms_time(moment: datetime) -> str:
    """« 10h00 »: the emails' « 10 h 00 » is longer, and SMS count every character."""
    return f"{moment.hour}h{moment.minute:02d}"


def render(
    kind: str,
    appointment: AppointmentRequested,
    url: str,
    now: datetime,
    offset_minutes: int | None = None,
) -> str:
    zone = dates.appointment_zone(appointment.timezone, appointment.caf_code)
    start = appointment.start.astimezone(zone)
    values = {
        "prefix": PREFIX,
        "date": dates.french_date(start),
        "time": sms_time(start),
        "zone": dates.zone_label(zone),
        "url": url,
        "day": dates.relative_day(start, now),
    }
    template = {
        "confirmation": CONFIRMATION,
        "rescheduled": RESCHEDULED,
        "advisor_changed": ADVISOR_CHANGED,
        "cancellation": CANCELLATION,
    }.get(kind)
    if template is None:  # a reminder
        soon = offset_minutes is not None and offset_minutes <= SOON_MINUTES
        template = REMINDER_SOON if soon else REMINDER_DAYS
    return template.format(**values)
