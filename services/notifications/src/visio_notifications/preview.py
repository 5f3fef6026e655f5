"""Sample emails of every kind, to look at without Kafka, a database or a relay: what
`visio-rdv notifications preview` writes (`.eml`, `.html`, `.txt`, and `.ics` when the email
carries one).

Without NOTIFICATIONS_LINK_KEYS, the « Gérer mon rendez-vous » links are signed with a preview
key no page accepts, so the section shows as it will be sent.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import SecretStr
from visio_shared import (
    OVERSEAS_CAFS,
    Advisor,
    AppointmentCancelled,
    AppointmentRequested,
    ConsentGiven,
    Device,
    MeetingReady,
    Person,
    current_cgu,
)

from visio_notifications import sms_encoding
from visio_notifications.compose import Letter, compose, context, render
from visio_notifications.decide import LinkRequest, State, Told, recipient_sha256
from visio_notifications.settings import NotificationsSettings

KINDS = (
    "confirmation",
    "rescheduled",
    "contact_corrected",
    "advisor_changed",
    "cancellation",
    "reminder",
    "meeting_unavailable",
    "link_resent",
)
CANCEL_REASONS = ("user", "advisor", "administrative")
REQUEST_REASONS = ("resend", "fresh_link")
ENDED = ("over", "cancelled")  # a fresh link asked for after the appointment
# Signs the sample's links when no key is configured: public, so no page ever accepts it.
PREVIEW_LINK_KEYS = "preview:sample-links-no-page-accepts-this-key"

SAMPLE_JOIN_URL = (
    "https://teams.microsoft.com/l/meetup-join/19%3ameeting_NzQ1YjM2ZTMtYjYxZC00ZGE4%40thread.v2/0"
    "?context=%7b%22Tid%22%3a%22a1b2c3d4%22%2c%22Oid%22%3a%22e5f6a7b8%22%7d"
)
PREVIOUS_JOIN_URL = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_previous%40thread.v2/0"


def caf_of(timezone: str) -> str:
    """The Caf of a zone: an overseas one, else Paris (75)."""
    return next((caf.caf_code for caf in OVERSEAS_CAFS.values() if caf.timezone == timezone), "075")


def sample_appointment(
    device: Device = Device.SMARTPHONE,
    timezone: str = "Indian/Reunion",
    recording_authorised: bool = True,
    revision: int = 1,
) -> AppointmentRequested:
    zone = ZoneInfo(timezone)
    cgu = current_cgu()
    return AppointmentRequested(
        appointment_id=uuid.UUID("6f1c2d3e-4b5a-4c6d-8e7f-90a1b2c3d4e5"),
        revision=revision,
        correlation_id=uuid.UUID("0d9c8b7a-6f5e-4d3c-9b2a-1f0e9d8c7b6a"),
        caf_code=caf_of(timezone),
        advisor=Advisor(id="3f1c0d2e-9b8a-4c7d-8e6f-5a4b3c2d1e0f", display_name="Claire Martin"),
        start=datetime(2026, 12, 3, 10, 0, tzinfo=zone),
        duration_minutes=30,
        timezone=timezone,
        subject="Prime d'activité : questions sur ma déclaration",
        user=Person(
            first_name="Amina", last_name="Hoarau", email="amina.hoarau@example.org", device=device
        ),
        consent=ConsentGiven(
            cgu_version=cgu.version,
            cgu_sha256=cgu.sha256,
            accepted_at=datetime(2026, 11, 20, 8, 30, tzinfo=UTC),
            recording_authorised=recording_authorised,
            channel="api",
        ),
        calling_system="caf.fr",
    )


def sample_letter(
    kind: str,
    device: Device = Device.SMARTPHONE,
    timezone: str = "Indian/Reunion",
    *,
    recording_authorised: bool = True,
    reason: str = "user",
    reminder_offset_minutes: int = 60,
    request_reason: str = "resend",
    ended: str | None = None,
) -> tuple[Letter, datetime]:
    """The letter of one kind for the sample appointment, and the moment it is written; with
    `ended`, the link_resent a fresh link gets after the appointment (« Mes consentements »)."""
    revision = 1 if kind in ("confirmation", "reminder", "meeting_unavailable") else 2
    appointment = sample_appointment(device, timezone, recording_authorised, revision)
    previous = Told(
        kind="confirmation",
        revision=1,
        status="sent",
        recipient_sha256=recipient_sha256(str(appointment.user.email)),
        device=str(device),
        start_at=appointment.start - timedelta(days=2, hours=1),
        duration_minutes=appointment.duration_minutes,
        join_url=PREVIOUS_JOIN_URL if kind == "advisor_changed" else SAMPLE_JOIN_URL,
    )
    if kind == "advisor_changed":
        previous = replace(previous, start_at=appointment.start)
    cancellation = AppointmentCancelled(
        appointment_id=appointment.appointment_id,
        revision=revision,
        correlation_id=appointment.correlation_id,
        reason=reason,
        cancelled_by="caf.fr",
    )
    now = appointment.start - timedelta(days=7)
    if kind == "reminder":
        now = appointment.start - timedelta(minutes=reminder_offset_minutes)
    ended = ended if kind == "link_resent" else None
    if ended == "over":
        now = appointment.start + timedelta(days=45)
    request = LinkRequest(
        uuid.UUID("1b2c3d4e-5f60-4718-9a2b-3c4d5e6f7081"),
        "fresh_link" if ended else request_reason,
        requested_at=now,
    )
    letter = Letter(
        kind=kind,
        revision=revision,
        appointment=appointment,
        join_url=(
            None if kind in ("cancellation", "meeting_unavailable") or ended else SAMPLE_JOIN_URL
        ),
        previous=previous if kind in ("rescheduled", "advisor_changed") else None,
        cancellation=cancellation if kind == "cancellation" or ended == "cancelled" else None,
        reminder_offset_minutes=reminder_offset_minutes if kind == "reminder" else None,
        link_sent_before=kind != "confirmation",
        request=request if kind == "link_resent" else None,
        ended=ended,
    )
    if letter.join_url is not None:
        letter = replace(letter, meeting=sample_meeting(appointment))
    return letter, now


def sample_meeting(appointment: AppointmentRequested) -> MeetingReady:
    """The sample's meeting, with a dial-in as Graph gives one to an advisor with Audio
    Conferencing."""
    return MeetingReady(
        appointment_id=appointment.appointment_id,
        revision=appointment.revision,
        correlation_id=appointment.correlation_id,
        join_url=SAMPLE_JOIN_URL,
        graph_event_id="AAMkAGI2TGuLAAA=",
        advisor_id=appointment.advisor.id,
        conference_id="418276539",
        toll_number="+33 1 70 00 00 00",
    )


def preview_settings(*, self_service: bool = True) -> NotificationsSettings:
    """The environment's settings; with the preview key if they have none (or with no key
    at all, to see an email as sent without one)."""
    settings = NotificationsSettings()
    if not self_service:
        return settings.model_copy(update={"link_keys": None})
    if settings.link_keys is None:
        return settings.model_copy(update={"link_keys": SecretStr(PREVIEW_LINK_KEYS)})
    return settings


def write_preview(
    out_dir: Path,
    letter: Letter,
    now: datetime,
    settings: NotificationsSettings | None = None,
) -> list[Path]:
    """Write `<kind>.eml`, `.html`, `.txt` and, if the email has one, `.ics`."""
    settings = settings or preview_settings()
    message = compose(letter, settings, now=now)
    text, html = render(letter, context(letter, settings, now))
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / letter.kind
    written = {
        stem.with_suffix(".eml"): bytes(message),
        stem.with_suffix(".html"): html.encode(),
        stem.with_suffix(".txt"): text.encode(),
    }
    for part in message.iter_attachments():
        if part.get_content_type() == "text/calendar":
            ics = part.get_content()
            written[stem.with_suffix(".ics")] = ics.encode() if isinstance(ics, str) else ics
    for path, content in written.items():
        path.write_bytes(content)
    return list(written)


def sms_preview(letter: Letter, now: datetime, settings: NotificationsSettings) -> str | None:
    """The text message of this kind, if there is one, with its encoding and segment count:
    « [GSM-7, 152 characters, 1 SMS] Caf : … »."""
    from visio_notifications.sms import PROMISES, text_of  # the SMS module needs a database

    if letter.kind not in PROMISES:
        return None
    state = State(letter.appointment, letter.revision, letter.cancellation, None, ())
    text = text_of(letter.kind, state, settings, now, letter.reminder_offset_minutes)
    counted = sms_encoding.count(text)
    units = "septets" if counted.encoding == "GSM-7" else "units"
    return f"[{counted.encoding}, {counted.units} {units}, {counted.segments} SMS] {text}"
