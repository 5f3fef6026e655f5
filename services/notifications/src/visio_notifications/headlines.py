"""The words at the top of an email: its subject and preheader by kind, and the « before /
now » lines of what changed since the person was last told."""

from __future__ import annotations

from datetime import datetime

from visio_runtime import french_dates as dates
from visio_shared import AppointmentRequested

from visio_notifications import wording
from visio_notifications.decide import Told


def subject_and_preheader(
    kind: str,
    *,
    when: str,
    zone: str,
    advisor: str,
    day: str,
    time: datetime,
    has_link: bool,
    meeting_failed: bool,
    caf: str,
) -> tuple[str, str]:
    if kind == "link_resent":
        if has_link:
            return (
                wording.LINK_RESENT_SUBJECT.format(when=when),
                wording.CONFIRMATION_PREHEADER.format(when=when, zone=zone, advisor=advisor),
            )
        preheader = (
            wording.UNAVAILABLE_NEXT.format(caf=caf)
            if meeting_failed
            else wording.LINK_RESENT_PREHEADER_PENDING.format(when=when, zone=zone, advisor=advisor)
        )
        return wording.LINK_RESENT_SUBJECT_NO_LINK.format(when=when), preheader
    if kind in ("confirmation", "contact_corrected"):
        return (
            wording.CONFIRMATION_SUBJECT.format(when=when),
            wording.CONFIRMATION_PREHEADER.format(when=when, zone=zone, advisor=advisor),
        )
    if kind == "rescheduled":
        return (
            wording.RESCHEDULED_SUBJECT.format(when=when),
            wording.RESCHEDULED_PREHEADER.format(when=when, zone=zone),
        )
    if kind == "advisor_changed":
        return (
            wording.ADVISOR_CHANGED_SUBJECT.format(when=when),
            wording.ADVISOR_CHANGED_PREHEADER.format(when=when, advisor=advisor),
        )
    if kind == "cancellation":
        subject = wording.CANCELLATION_SUBJECT.format(when=when)
        return subject, subject
    if kind == "reminder":
        hour = dates.french_time(time)
        preheader = wording.REMINDER_PREHEADER.format(
            day=day, time=hour, zone=zone, advisor=advisor
        )
        return (
            wording.REMINDER_SUBJECT.format(day=day, time=hour),
            preheader[:1].upper() + preheader[1:],
        )
    subject = wording.UNAVAILABLE_SUBJECT.format(when=when)
    return subject, wording.UNAVAILABLE_NEXT.format(caf=caf)


def changes(
    previous: Told | None, appointment: AppointmentRequested, start: datetime, zone_name: str
) -> list[tuple[str, str]]:
    """(before, now) lines of what changed since the person was last told."""
    if previous is None or previous.start_at is None:
        return []
    lines = []
    if previous.start_at != appointment.start:
        before = dates.french_datetime(previous.start_at.astimezone(start.tzinfo), with_year=True)
        now = dates.french_datetime(start, with_year=True)
        lines.append((before, f"{now} ({zone_name})"))
    if previous.duration_minutes not in (None, appointment.duration_minutes):
        assert previous.duration_minutes is not None
        lines.append(
            (
                f"{wording.DETAILS_DURATION} : {dates.duration_text(previous.duration_minutes)}",
                f"{wording.DETAILS_DURATION} : {dates.duration_text(appointment.duration_minutes)}",
            )
        )
    return lines
