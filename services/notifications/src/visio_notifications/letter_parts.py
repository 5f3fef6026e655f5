"""What an email shows, already in words, part by part: its subject; the date card; how to join
on the person's device and the CGU version they accepted (the static blocks' inputs); the Caf
and how to reach it (visio_shared.caf_directory, with the deployment's contacts); the dial-in
of the meeting, when Graph gave one; what each kind of email says; the self-service links.
`compose` renders them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from visio_runtime import french_dates as dates
from visio_runtime import guide
from visio_shared import Device, MeetingReady
from visio_shared.caf_directory import Caf

from visio_notifications import headlines, self_service, wording
from visio_notifications.settings import NotificationsSettings

if TYPE_CHECKING:
    from visio_notifications.compose import Letter


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


_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def clean(text: str) -> str:
    """No control character (a newline in a name must never become a header)."""
    return _CONTROL.sub(" ", text).strip()


@dataclass(frozen=True)
class _Facts:
    """What the parts of one email are worded from: the letter, and its appointment's time,
    advisor and Caf as the person reads them."""

    letter: Letter
    settings: NotificationsSettings
    start: datetime  # in the appointment's zone
    zone: ZoneInfo
    zone_name: str
    advisor: str
    day: str  # « aujourd'hui », « demain », …
    caf: Caf
    the_caf: str  # « La Caf de La Réunion » or « Votre Caf »

    @property
    def full_date(self) -> str:
        return dates.french_datetime(self.start, with_year=True)


def values(letter: Letter, settings: NotificationsSettings, now: datetime) -> dict[str, Any]:
    """What the templates show, already in words, part by part."""
    appointment = letter.appointment
    zone = dates.appointment_zone(appointment.timezone, appointment.caf_code)
    start = appointment.start.astimezone(zone)
    caf = settings.cafs().get(appointment.caf_code)
    facts = _Facts(
        letter,
        settings,
        start,
        zone,
        dates.zone_label(zone),
        clean(appointment.advisor.display_name),
        dates.relative_day(start, now),
        caf,
        the_caf(caf),
    )
    return (
        {"kind": letter.kind}
        | _headline(facts)
        | _when_and_who(facts)
        | _guide_and_charter(facts)
        | _caf_contact(facts)
        | _dial_in(letter.meeting)
        | _changes(facts)
        | _cancellation(facts)
        | _reminder(facts)
        | _link_news(facts)
        | _self_service_links(facts)
        | {
            "footer": wording.FOOTER[settings.reply_to is not None],
            "logo_url": settings.logo_url,
            "start": start,
        }
    )


def _headline(facts: _Facts) -> dict[str, str]:
    """Subject and preheader; the right of access after the appointment has its own."""
    letter = facts.letter
    if letter.ended is not None:
        subject = wording.CONSENTS_ONLY_SUBJECT.format(when=facts.full_date)
        return {"subject": subject, "preheader": wording.CONSENTS_ONLY_PREHEADER}
    subject, preheader = headlines.subject_and_preheader(
        letter.kind,
        when=dates.french_datetime(facts.start),
        zone=facts.zone_name,
        advisor=facts.advisor,
        day=facts.day,
        time=facts.start,
        has_link=letter.join_url is not None,
        meeting_failed=letter.meeting_failed,
        caf=facts.the_caf,
    )
    return {"subject": subject, "preheader": preheader}


def _when_and_who(facts: _Facts) -> dict[str, str]:
    """The greeting, the date card and the advisor."""
    appointment, start = facts.letter.appointment, facts.start
    return {
        "greeting": wording.GREETING.format(first_name=clean(appointment.user.first_name)),
        "when_line": wording.WHEN_LINE.format(
            date=dates.french_date(start, with_year=True),
            time=dates.french_time(start),
            zone=facts.zone_name,
        ),
        "date": dates.french_date(start, with_year=True),
        "time": dates.french_time(start),
        "zone": facts.zone_name,
        "duration": dates.duration_text(appointment.duration_minutes),
        "advisor": facts.advisor,
        "appointment_subject": clean(appointment.subject),
    }


def _guide_and_charter(facts: _Facts) -> dict[str, Any]:
    """How to join on the person's device (and where the link is when it is not there yet),
    the CGU version accepted and the recording choice: the static blocks' inputs."""
    letter, settings = facts.letter, facts.settings
    device = letter.appointment.user.device
    consent = letter.appointment.consent
    where_the_link_is = {} if letter.join_url else {"where_the_link_is": wording.LINK_PENDING_WHERE}
    return {
        "join_url": letter.join_url,
        "device_note": guide.DEVICE_NOTE[device],
        "guide_paths": guide.guide_paths(
            device, settings.app_store_url, settings.google_play_url, **where_the_link_is
        ),
        "browser_note": wording.BROWSER_NOTE if device is Device.COMPUTER else None,
        "cgu_line": wording.CGU_LINE.format(version=consent.cgu_version),
        "cgu_url": cgu_url(settings, consent.cgu_version),
        "cgu_link": wording.CGU_LINK.format(version=consent.cgu_version),
        "recording": wording.RECORDING[consent.recording_authorised],
    }


def _changes(facts: _Facts) -> dict[str, Any]:
    """What changed since the person was last told, a new advisor, a Caf unavailable."""
    letter = facts.letter
    return {
        "changes": headlines.changes(
            letter.previous, letter.appointment, facts.start, facts.zone_name
        ),
        "advisor_intro": wording.ADVISOR_CHANGED_INTRO.format(advisor=facts.advisor),
        "unavailable_intro": wording.UNAVAILABLE_INTRO.format(
            when=facts.full_date, zone=facts.zone_name
        ),
    }


def _cancellation(facts: _Facts) -> dict[str, str]:
    """Who cancelled, and how to book again."""
    cancellation = facts.letter.cancellation
    reason = cancellation.reason if cancellation else "administrative"
    return {
        "cancelled_by": wording.CANCELLED_BY[reason].format(
            when=facts.full_date, zone=facts.zone_name, caf=facts.the_caf
        ),
        "new_appointment": wording.NEW_APPOINTMENT[reason],
        "new_appointment_url": facts.settings.new_appointment_url,
    }


def _reminder(facts: _Facts) -> dict[str, str | None]:
    """The reminder's opening, and the mobile's app when the person joins from one."""
    device = facts.letter.appointment.user.device
    return {
        "reminder_intro": wording.REMINDER_INTRO.format(
            day=facts.day, time=dates.french_time(facts.start), zone=facts.zone_name
        ),
        "reminder_mobile": (
            wording.REMINDER_MOBILE.format(device=wording.REMINDER_DEVICE_NAMES[device])
            if device != Device.COMPUTER
            else None
        ),
    }


def _link_news(facts: _Facts) -> dict[str, Any]:
    """What the email says of the join link (sent before, asked again, not created, the
    appointment over) and of a text that could not reach the person's mobile."""
    letter = facts.letter
    mobile = letter.appointment.user.mobile
    return {
        "link_sent_before": letter.link_sent_before,
        "link_resent_intro": wording.LINK_RESENT_INTRO[
            letter.request.reason if letter.request else "resend"
        ],
        "meeting_failed": letter.meeting_failed,
        "ended": (
            wording.CONSENTS_ONLY_ENDED[letter.ended].format(
                when=facts.full_date, zone=facts.zone_name
            )
            if letter.ended
            else None
        ),
        "sms_number_failed": (
            wording.SMS_NUMBER_FAILED.format(last_digits=(mobile or "")[-2:])
            if letter.number_failed and mobile and letter.kind != "cancellation"
            else None
        ),
    }


def _self_service_links(facts: _Facts) -> dict[str, Any]:
    """« Gérer mon rendez-vous » and until when its links work; after the appointment,
    « Mes consentements » alone (the right of access outlives the appointment)."""
    letter, settings = facts.letter, facts.settings
    if letter.ended is not None:
        assert letter.request is not None
        requested_at = letter.request.requested_at
        section = self_service.consents_section(letter.appointment, settings, requested_at)
        valid_until = wording.CONSENTS_ONLY_VALID_UNTIL
    else:
        cancelled = letter.kind == "cancellation"
        section = self_service.section(letter.appointment, settings, cancelled=cancelled)
        valid_until = wording.SELF_SERVICE_VALID_UNTIL
    expires = section.expires_at.astimezone(facts.zone) if section else None
    return {
        "self_service": section,
        "self_service_valid_until": (
            valid_until.format(date=dates.french_date(expires, with_year=True)) if expires else None
        ),
    }


def _caf_contact(facts: _Facts) -> dict[str, Any]:
    """Whose Caf and how to reach it (when the deployment gave its contacts), and what it says
    when it cannot hold the appointment."""
    caf, the = facts.caf, facts.the_caf
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
    }


def _dial_in(meeting: MeetingReady | None) -> dict[str, Any]:
    """The number to call and the conference id to type, when Graph gave them."""
    dial_in = dial_in_of(meeting)
    return {
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
