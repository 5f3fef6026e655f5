"""The integration events of Visio RDV, one frozen model per event type."""

from __future__ import annotations

import enum
import re
import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
)

from visio_shared.email_address import EmailAddress as EmailAddress
from visio_shared.envelope import AppointmentEvent, Envelope
from visio_shared.reschedule_preferences import (
    DAY_PART_LABELS as DAY_PART_LABELS,
)
from visio_shared.reschedule_preferences import (
    RESCHEDULE_MESSAGE_MAX as RESCHEDULE_MESSAGE_MAX,
)
from visio_shared.reschedule_preferences import DayPart as DayPart
from visio_shared.reschedule_preferences import ReschedulePreferences as ReschedulePreferences
from visio_shared.reschedule_preferences import Weekday as Weekday


class Device(enum.StrEnum):
    COMPUTER = "computer"
    SMARTPHONE = "smartphone"
    TABLET = "tablet"


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


_GUID = re.compile(r"[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}")
GUID_PATTERN = f"^{_GUID.pattern}$"


def _advisor_id(value: str) -> str:
    if not _GUID.fullmatch(value):
        raise ValueError(
            "must be the advisor's Entra object id, a GUID such as "
            "6f1c2a4e-8b1d-4c55-9a51-2f9e6f0c1d11"
        )
    return value.lower()


AdvisorId = Annotated[
    str,
    AfterValidator(_advisor_id),
    Field(
        description="The advisor's Entra object id: a GUID (8-4-4-4-12 hexadecimal digits), "
        "given in either case and kept in lower case, the one id of an advisor everywhere.",
        json_schema_extra={"format": "uuid", "pattern": GUID_PATTERN},
    ),
]


# A department's code on three characters (075, 02A, 974): `visio_shared.caf_directory`.
CAF_CODE_PATTERN = r"^(?:\d{3}|02[AB])$"


class Advisor(_Part):
    id: AdvisorId
    display_name: str = Field(min_length=1, max_length=200)


class Person(_Part):
    first_name: str = Field(min_length=1, max_length=100)
    last_name: str = Field(min_length=1, max_length=100)
    email: EmailAddress
    device: Device
    mobile: str | None = Field(default=None, description="E.164, checked by booking.")
    sms_opt_in: bool = Field(default=False, description="Text messages wanted at `mobile`.")


class ConsentGiven(_Part):
    cgu_version: str
    cgu_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    accepted_at: AwareDatetime
    recording_authorised: bool
    channel: str = Field(description="How the person accepted: 'api' or 'kafka'.")


class AppointmentRequested(AppointmentEvent):
    event_type: Literal["AppointmentRequested"] = "AppointmentRequested"
    caf_code: str = Field(pattern=CAF_CODE_PATTERN)
    advisor: Advisor
    start: AwareDatetime
    duration_minutes: int = Field(ge=1)
    timezone: str
    subject: str
    user: Person
    consent: ConsentGiven
    calling_system: str


CancelReason = Literal["user", "advisor", "administrative"]


class AppointmentRescheduled(AppointmentEvent):
    """New start and/or duration; the meeting and its link stay the same."""

    event_type: Literal["AppointmentRescheduled"] = "AppointmentRescheduled"
    start: AwareDatetime
    duration_minutes: int = Field(ge=1)
    timezone: str
    previous_start: AwareDatetime
    previous_duration_minutes: int = Field(ge=1)


class AppointmentCancelled(AppointmentEvent):
    event_type: Literal["AppointmentCancelled"] = "AppointmentCancelled"
    reason: CancelReason
    cancelled_by: str = Field(description="The calling system that cancelled.")


class ContactCorrected(AppointmentEvent):
    """The person's contact details, corrected: the confirmation goes again to the new address."""

    event_type: Literal["ContactCorrected"] = "ContactCorrected"
    user: Person


class ContactCorrectionRequested(AppointmentEvent):
    """The person asked, from « Mon rendez-vous », to correct their details to a new address:
    notifications mails the link that confirms it to that address (its code is derived from
    this event's id: `visio_shared.links.address_confirmation_code`). Nothing changes until it
    is followed; then booking applies the correction and publishes ContactCorrected."""

    event_type: Literal["ContactCorrectionRequested"] = "ContactCorrectionRequested"
    user: Person = Field(description="The details as they will be once confirmed.")
    expires_at: AwareDatetime = Field(description="The confirmation link works until then.")


class AdvisorReassigned(AppointmentEvent):
    """A new advisor: a new meeting and link; the old meeting is cancelled."""

    event_type: Literal["AdvisorReassigned"] = "AdvisorReassigned"
    advisor: Advisor
    previous_advisor: Advisor


class RescheduleRequested(AppointmentEvent):
    """The person asked, from « Mon rendez-vous », to move the appointment. Nothing changes: the
    partner that owns the slots is told (its outcome stream) and, for an appointment booked over
    HTTP, notifications mails the Caf's team; the move itself comes as a normal reschedule."""

    event_type: Literal["RescheduleRequested"] = "RescheduleRequested"
    preferences: ReschedulePreferences
    calling_system: str = Field(description="Who booked it: where the request must go.")


class AppointmentLinkRequested(AppointmentEvent):
    """The person asked, from a self-service page, for the appointment's email again: its join
    link and fresh self-service links (once the appointment has ended or was cancelled, only
    the link to their consents and proofs). Booking publishes it (rate-limited); notifications
    sends one email per event."""

    event_type: Literal["AppointmentLinkRequested"] = "AppointmentLinkRequested"
    reason: Literal["resend", "fresh_link"] = Field(
        description="'resend': « Recevoir à nouveau le lien »; 'fresh_link': the person's link "
        "had expired or could not be read, and they asked for a new one."
    )


class MeetingReady(AppointmentEvent):
    event_type: Literal["MeetingReady"] = "MeetingReady"
    join_url: str
    graph_event_id: str
    online_meeting_id: str | None = None
    advisor_id: AdvisorId
    conference_id: str | None = Field(default=None, description="Dial-in conference id.")
    dial_in_url: str | None = None
    toll_number: str | None = Field(
        default=None, description="Dial-in number (Graph's audioConferencing.tollNumber)."
    )
    toll_free_number: str | None = Field(
        default=None, description="Free dial-in number (audioConferencing.tollFreeNumber)."
    )
    join_meeting_id: str | None = Field(default=None, description="Teams meeting id to type in.")
    passcode: str | None = None


class MeetingRescheduled(AppointmentEvent):
    event_type: Literal["MeetingRescheduled"] = "MeetingRescheduled"
    graph_event_id: str
    join_url: str


class MeetingCancelled(AppointmentEvent):
    event_type: Literal["MeetingCancelled"] = "MeetingCancelled"
    graph_event_id: str
    advisor_id: AdvisorId


class AttendanceInterval(_Part):
    joined_at: AwareDatetime
    left_at: AwareDatetime
    duration_seconds: int = Field(ge=0)


class ParticipantAttendance(_Part):
    """One participant's presence, by role; never a display name or an address."""

    role: Literal["organizer", "public", "other"]
    total_attendance_seconds: int = Field(ge=0)
    intervals: list[AttendanceInterval]


class MeetingAttendanceRecorded(AppointmentEvent):
    """Who joined the meeting, when and for how long (Graph's attendance report)."""

    event_type: Literal["MeetingAttendanceRecorded"] = "MeetingAttendanceRecorded"
    online_meeting_id: str
    report_id: str
    meeting_start: AwareDatetime
    meeting_end: AwareDatetime
    participants: list[ParticipantAttendance]
    public_attended: bool = Field(description="False: the member of the public never joined.")


class MeetingAttendanceUnavailable(AppointmentEvent):
    event_type: Literal["MeetingAttendanceUnavailable"] = "MeetingAttendanceUnavailable"
    online_meeting_id: str
    reason: str


class MeetingRecordingAvailable(AppointmentEvent):
    """A recording exists (metadata only: its content is never downloaded by us)."""

    event_type: Literal["MeetingRecordingAvailable"] = "MeetingRecordingAvailable"
    online_meeting_id: str
    recording_id: str
    created_at: AwareDatetime
    content_correlation_id: str | None = None


class RecordingConsentWithdrawn(AppointmentEvent):
    event_type: Literal["RecordingConsentWithdrawn"] = "RecordingConsentWithdrawn"
    subject_ref: str
    withdrawn_at: AwareDatetime
    channel: str


AdvisorOutcome = Literal["held", "no_show", "failed_technical"]


class AdvisorOutcomeReported(AppointmentEvent):
    """The advisor's own word on how the appointment went, given signed in with Entra ID on
    booking's advisor page: it sets the status and wins over Graph's attendance report where
    they disagree (both stay in consent's ledger as proof)."""

    event_type: Literal["AdvisorOutcomeReported"] = "AdvisorOutcomeReported"
    advisor_id: AdvisorId = Field(description="The signed-in advisor's Entra object id (oid).")
    outcome: AdvisorOutcome = Field(
        description="held, no_show (the person did not come) or failed_technical."
    )
    comment: str | None = Field(
        default=None, max_length=500, description="The advisor's optional words, as typed."
    )
    reported_at: AwareDatetime


class MeetingFailed(AppointmentEvent):
    event_type: Literal["MeetingFailed"] = "MeetingFailed"
    reason: str = Field(description="A short machine-readable cause, e.g. 'graph_forbidden'.")
    detail: str = ""


NotificationKind = Literal[
    "confirmation",
    "rescheduled",
    "contact_corrected",
    "advisor_changed",
    "cancellation",
    "reminder",
    "meeting_unavailable",
    "link_resent",
]


class NotificationSent(AppointmentEvent):
    event_type: Literal["NotificationSent"] = "NotificationSent"
    kind: NotificationKind
    message_id: str
    reminder_offset_minutes: int | None = None


class NotificationFailed(AppointmentEvent):
    event_type: Literal["NotificationFailed"] = "NotificationFailed"
    kind: NotificationKind
    reason: str
    detail: str = ""
    smtp_code: int | None = None
    reminder_offset_minutes: int | None = None


SmsKind = Literal["confirmation", "rescheduled", "advisor_changed", "cancellation", "reminder"]


class SmsFailed(AppointmentEvent):
    """A text message that will never reach the person: the provider refused the number, or
    its delivery receipt says the number does not exist. The Caf is told (alerts), and the
    person's next email asks them to check their number."""

    event_type: Literal["SmsFailed"] = "SmsFailed"
    kind: SmsKind
    reason: str = Field(description="rejected (refused at sending) or hard_bounce (receipt).")
    detail: str = ""
    reminder_offset_minutes: int | None = None


ErasingService = Literal["booking", "meetings", "notifications", "consent"]


class PersonalDataErasureRequested(AppointmentEvent):
    """Erase or pseudonymise what is held about the person of one appointment, everywhere.

    Booking publishes one per appointment of the person (keyed by it, so it comes after that
    appointment's other events); it carries no name and no address, only the ids, so the topic
    never copies what is being erased. The operator's reason stays in booking."""

    event_type: Literal["PersonalDataErasureRequested"] = "PersonalDataErasureRequested"
    erasure_id: uuid.UUID = Field(description="One erasure request, across its appointments.")
    requested_by: str = Field(description="The operator or API key's holder who asked.")


class PersonalDataErased(AppointmentEvent):
    """One service's confirmation that it erased what it held for the appointment (and
    remembers the id, so no replay brings the data back). Booking collects them."""

    event_type: Literal["PersonalDataErased"] = "PersonalDataErased"
    erasure_id: uuid.UUID
    service: ErasingService


class LedgerEntry(_Part):
    """One record appended to the consent ledger, as its `ConsentRecorded` announces it.

    `payload` and `recorded_at` carry the record itself, so a ledger restored from a backup
    older than the announcement can be rebuilt from the topic (`visio-rdv consent
    rebuild-from-events`) and the rebuilt bytes proven by the hash. Optional: events published
    before they existed still parse, and announce only seq, kind and hash.
    """

    seq: int
    kind: str
    hash: str
    payload: str | None = Field(
        default=None,
        description="The chained record exactly as hashed: its RFC 8785 canonical JSON, "
        "whose SHA-256 after the previous record's hash is `hash`. Pseudonymous: the person is "
        "a subject_ref (keyed HMAC), never a name or an address.",
    )
    recorded_at: AwareDatetime | None = Field(
        default=None, description="When the ledger recorded it (also inside `payload`)."
    )


class ConsentRecorded(AppointmentEvent):
    event_type: Literal["ConsentRecorded"] = "ConsentRecorded"
    subject_ref: str = Field(description="Keyed HMAC of the normalised email; never the email.")
    cgu_version: str
    entries: list[LedgerEntry]


AnyEvent = Annotated[
    AppointmentRequested
    | AppointmentRescheduled
    | AppointmentCancelled
    | ContactCorrected
    | ContactCorrectionRequested
    | AdvisorReassigned
    | AppointmentLinkRequested
    | MeetingReady
    | MeetingRescheduled
    | MeetingCancelled
    | RecordingConsentWithdrawn
    | MeetingAttendanceRecorded
    | MeetingAttendanceUnavailable
    | MeetingRecordingAvailable
    | AdvisorOutcomeReported
    | MeetingFailed
    | NotificationSent
    | NotificationFailed
    | SmsFailed
    | ConsentRecorded
    | PersonalDataErasureRequested
    | PersonalDataErased
    | RescheduleRequested,
    Field(discriminator="event_type"),
]

EVENT_TYPES: dict[str, type[Envelope]] = {
    model.model_fields["event_type"].default: model
    for model in (
        AppointmentRequested,
        AppointmentRescheduled,
        AppointmentCancelled,
        ContactCorrected,
        ContactCorrectionRequested,
        AdvisorReassigned,
        AppointmentLinkRequested,
        RescheduleRequested,
        MeetingReady,
        MeetingRescheduled,
        MeetingCancelled,
        RecordingConsentWithdrawn,
        MeetingAttendanceRecorded,
        MeetingAttendanceUnavailable,
        MeetingRecordingAvailable,
        AdvisorOutcomeReported,
        MeetingFailed,
        NotificationSent,
        NotificationFailed,
        SmsFailed,
        ConsentRecorded,
        PersonalDataErasureRequested,
        PersonalDataErased,
    )
}

_any_event: TypeAdapter[Any] = TypeAdapter(AnyEvent)


def parse_event(data: bytes | str) -> Envelope:
    """Parse one event from its JSON bytes; raises pydantic.ValidationError if it is not one."""
    event: Envelope = _any_event.validate_json(data)
    return event
