"""The parts of an email that depend on whose Caf and which meeting: the Caf's name and how to
reach it (visio_shared.caf_directory, with the deployment's contacts), the link to the CGU
version the person accepted, and — when Graph gave one — the dial-in of the meeting."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from visio_shared import AppointmentRequested, Device, MeetingReady
from visio_shared.caf_directory import Caf

from visio_notifications import wording
from visio_notifications.settings import NotificationsSettings


@dataclass(frozen=True)
class DialIn:
    """What Graph's onlineMeeting.audioConferencing gave (v1.0): a number and the conference id."""

    number: str
    toll_free: bool
    conference_id: str
    other_numbers: tuple[str, ...] = ()


def dial_in_of(meeting: MeetingReady | None) -> DialIn | None:
    """The dial-in to print, or None when there is no number or no conference id to type."""
    if meeting is None or not meeting.conference_id:
        return None
    number = meeting.toll_free_number or meeting.toll_number
    if not number:
        return None
    others = tuple(n for n in (meeting.toll_number,) if n and n != number)
    return DialIn(number, number == meeting.toll_free_number, meeting.conference_id, others)


def the_caf(caf: Caf) -> str:
    """« La Caf de La Réunion », or « Votre Caf » for a code outside the directory."""
    return f"La {caf.name}" if caf.name.startswith("Caf ") else "Votre Caf"


def cgu_url(settings: NotificationsSettings, version: str) -> str:
    """The CGU version the person accepted, as consent publishes it (/cgu/<version>)."""
    return f"{settings.consent_public_url.rstrip('/')}/cgu/{version}"


def values(
    appointment: AppointmentRequested,
    settings: NotificationsSettings,
    meeting: MeetingReady | None,
) -> dict[str, Any]:
    caf = settings.cafs().get(appointment.caf_code)
    the = the_caf(caf)
    dial_in = dial_in_of(meeting)
    return {
        "caf": caf,
        "signature": caf.name if caf.name.startswith("Caf ") else "Votre Caf",
        "caf_contact_title": wording.CAF_CONTACT_TITLE.format(caf=the[0].lower() + the[1:]),
        "caf_phone": wording.CAF_PHONE.format(phone=caf.phone) if caf.phone else None,
        "caf_hours": wording.CAF_HOURS.format(hours=caf.hours) if caf.hours else None,
        "caf_mediator": (
            wording.CAF_MEDIATOR.format(mediator=caf.mediator) if caf.mediator else None
        ),
        "caf_access": (
            wording.CAF_ACCESS.format(address=caf.access_address) if caf.access_address else None
        ),
        "unavailable_title": wording.UNAVAILABLE_TITLE.format(caf=the),
        "unavailable_next": wording.UNAVAILABLE_NEXT.format(caf=the),
        "cgu_url": cgu_url(settings, appointment.consent.cgu_version),
        "cgu_link": wording.CGU_LINK.format(version=appointment.consent.cgu_version),
        "browser_note": (
            wording.BROWSER_NOTE if appointment.user.device is Device.COMPUTER else None
        ),
        "dial_in": dial_in,
        "dial_in_call": (
            wording.DIAL_IN_CALL.format(
                number=dial_in.number, free=wording.DIAL_IN_FREE if dial_in.toll_free else ""
            )
            if dial_in
            else None
        ),
        "dial_in_id": (
            wording.DIAL_IN_ID.format(conference_id=dial_in.conference_id) if dial_in else None
        ),
    }
