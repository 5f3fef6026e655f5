"""What other Caf systems send booking, over HTTP or on Kafka, and what booking sends back.

On Kafka each partner system writes its own topic, `booking-requests.<system>.v1`, and reads its
own, `booking-replies.<system>.v1`: the answer to each request (`BookingAccepted`,
`BookingRejected`) and the outcome of every appointment it created (`AppointmentOutcome`), both
in `visio_shared.booking_replies`. The
topic names the caller; the shared `booking-requests.v1` / `booking-replies.v1` remain for a
deprecation window (docs/partners.md).

The payloads are the HTTP bodies, unchanged: a request on Kafka carries exactly what the same
call over HTTP would, inside an envelope naming a request id (the idempotency key). Payloads are
strict: unknown fields are rejected, types are not coerced, and every rule a person would find
fair is checked with a message that names the field.

Validation context (all optional, for the rules that depend on settings or on the stored
appointment): `now`, `horizon_days`, `duration_bounds` (min, max), and for a reschedule the
appointment's `timezone`.
"""

from __future__ import annotations

import unicodedata
import uuid
import zoneinfo
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from visio_shared.caf_directory import CafCode
from visio_shared.cafs import OVERSEAS_CAFS, expected_timezone
from visio_shared.cgu_versions import CGU_VERSIONS, current_cgu
from visio_shared.events import AdvisorId, CancelReason, Device, EmailAddress
from visio_shared.phones import InvalidMobile, normalise_mobile

DEFAULT_HORIZON_DAYS = 180
DEFAULT_DURATION_BOUNDS = (10, 120)


class FieldErrors(ValueError):
    """Several cross-field errors at once, each naming its field."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors))
        self.errors = errors


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    @field_validator("*")
    @classmethod
    def _no_control_characters(cls, value: Any) -> Any:
        # A name or subject never holds one; NUL cannot even be stored in PostgreSQL text, and
        # CR/LF would be a header-injection attempt by the time they reach an email.
        if isinstance(value, str) and any(unicodedata.category(char) == "Cc" for char in value):
            raise ValueError("must not contain control characters")
        return value


# --- Payloads: the HTTP bodies -------------------------------------------------------------


class AdvisorIn(_Strict):
    id: AdvisorId
    display_name: str = Field(min_length=1, max_length=200)


_MOBILE_DESCRIPTION = (
    "The person's mobile, as they write it (06 12 34 56 78, +262 692 12 34 56); kept in "
    "E.164. Mobiles of metropolitan France and of the overseas départements only."
)
_SMS_OPT_IN_DESCRIPTION = (
    "The person chose to receive text messages (confirmation, reminders, changes) at `mobile`."
)


def _mobile(value: str) -> str:
    try:
        return normalise_mobile(value)
    except InvalidMobile as exc:
        raise ValueError(str(exc)) from None


MobileNumber = Annotated[
    str, Field(max_length=30, description=_MOBILE_DESCRIPTION), AfterValidator(_mobile)
]


class UserIn(_Strict):
    first_name: str = Field(min_length=1, max_length=100)
    last_name: str = Field(min_length=1, max_length=100)
    email: EmailAddress
    device: Device = Field(description="What the person will join with.")
    mobile: MobileNumber | None = None
    sms_opt_in: bool = Field(default=False, strict=True, description=_SMS_OPT_IN_DESCRIPTION)

    @model_validator(mode="after")
    def _opt_in_needs_a_number(self) -> UserIn:
        if self.sms_opt_in and self.mobile is None:
            raise FieldErrors([("user.mobile", "is needed to receive text messages")])
        return self


class ConsentIn(_Strict):
    cgu_version: str = Field(description="The version from GET /v1/cgu/current.")
    accepted_at: AwareDatetime
    recording_authorised: bool = Field(
        strict=True, description="Explicit: true or false, never absent."
    )

    @field_validator("cgu_version")
    @classmethod
    def _current_version(cls, value: str) -> str:
        current = current_cgu()
        if value not in CGU_VERSIONS:
            raise ValueError(
                f"unknown CGU version {value!r}; the current version is {current.version!r}"
            )
        if value != current.version:
            raise ValueError(
                f"CGU version {value!r} is outdated; the current version is {current.version!r}"
            )
        return value


class BookingRequest(_Strict):
    """Book a video appointment (`POST /v1/appointments`, or `BookAppointment`)."""

    caf_code: CafCode
    advisor: AdvisorIn
    start: AwareDatetime = Field(description="Local start with its UTC offset.")
    duration_minutes: int = Field(strict=True)
    timezone: str = Field(description="IANA time zone of the appointment, e.g. Indian/Reunion.")
    subject: str = Field(min_length=1, max_length=200)
    user: UserIn
    consent: ConsentIn

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        _zone(value)
        return value

    @field_validator("duration_minutes")
    @classmethod
    def _duration_in_bounds(cls, value: int, info: ValidationInfo) -> int:
        return _check_duration(value, info)

    @model_validator(mode="after")
    def _coherent(self, info: ValidationInfo) -> BookingRequest:
        context = info.context or {}
        now = _now(context)
        errors = _when_errors(self.start, now, context)
        if self.consent.accepted_at > now + timedelta(minutes=5):
            errors.append(("consent.accepted_at", "cannot be in the future"))
        errors += _offset_errors(self.start, self.timezone)
        expected = expected_timezone(self.caf_code)
        if self.caf_code in OVERSEAS_CAFS and self.timezone != expected:
            territory = OVERSEAS_CAFS[self.caf_code].territory
            errors.append(("timezone", f"Caf {self.caf_code} ({territory}) is in {expected}"))
        if errors:
            raise FieldErrors(errors)
        return self


class RescheduleRequest(_Strict):
    """A new start and/or duration; the meeting and its link stay the same. The start's offset
    must be the appointment's time zone's on that date."""

    start: AwareDatetime | None = Field(default=None, description="New local start with offset.")
    duration_minutes: int | None = Field(default=None, strict=True)

    @field_validator("duration_minutes")
    @classmethod
    def _duration_in_bounds(cls, value: int | None, info: ValidationInfo) -> int | None:
        return None if value is None else _check_duration(value, info)

    @model_validator(mode="after")
    def _coherent(self, info: ValidationInfo) -> RescheduleRequest:
        context = info.context or {}
        if self.start is None and self.duration_minutes is None:
            raise FieldErrors([("(body)", "give a new start, a new duration_minutes, or both")])
        if self.start is not None:
            errors = _when_errors(self.start, _now(context), context)
            if timezone := context.get("timezone"):
                errors += _offset_errors(self.start, timezone)
            if errors:
                raise FieldErrors(errors)
        return self


class CancelRequest(_Strict):
    reason: CancelReason = Field(description="Who asked: the person, the advisor, or the Caf.")


class ContactCorrection(_Strict):
    """The fields to correct (at least one); the confirmation goes again to the address."""

    first_name: str | None = Field(default=None, min_length=1, max_length=100)
    last_name: str | None = Field(default=None, min_length=1, max_length=100)
    email: EmailAddress | None = None
    device: Device | None = None
    mobile: MobileNumber | None = None
    sms_opt_in: bool | None = Field(default=None, strict=True, description=_SMS_OPT_IN_DESCRIPTION)

    @model_validator(mode="after")
    def _something(self) -> ContactCorrection:
        if not self.model_dump(exclude_none=True):
            raise FieldErrors(
                [
                    (
                        "(body)",
                        "give at least one of first_name, last_name, email, device, mobile, "
                        "sms_opt_in",
                    )
                ]
            )
        return self


class ReassignRequest(_Strict):
    """A new advisor: a new meeting and a new link; the old meeting is cancelled."""

    advisor: AdvisorIn


def _zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"{name!r} is not an IANA time zone") from exc


def _now(context: dict[str, Any]) -> datetime:
    now: datetime = context.get("now") or datetime.now(UTC)
    return now


def _check_duration(value: int, info: ValidationInfo) -> int:
    low, high = (info.context or {}).get("duration_bounds", DEFAULT_DURATION_BOUNDS)
    if not low <= value <= high:
        raise ValueError(f"must be between {low} and {high} minutes")
    return value


def _when_errors(start: datetime, now: datetime, context: dict[str, Any]) -> list[tuple[str, str]]:
    horizon_days: int = context.get("horizon_days", DEFAULT_HORIZON_DAYS)
    if start <= now:
        return [("start", "must be in the future")]
    if start > now + timedelta(days=horizon_days):
        return [("start", f"must be within {horizon_days} days")]
    return []


def _offset_errors(start: datetime, timezone: str) -> list[tuple[str, str]]:
    """The offset given must be the one the zone has on that date (a wrong offset is a wrong
    hour for the person)."""
    try:
        zone = _zone(timezone)
    except ValueError:
        return []  # the zone itself is reported by its own field
    local_offset = start.astimezone(zone).utcoffset()
    if local_offset == start.utcoffset():
        return []
    return [
        (
            "start",
            f"offset {start.strftime('%z')} does not match {timezone} "
            f"on that date (expected {_format_offset(local_offset)})",
        )
    ]


def _format_offset(offset: timedelta | None) -> str:
    if offset is None:
        return "?"
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


# --- Requests on booking-requests.v1 -------------------------------------------------------

RequestType = Literal[
    "BookAppointment",
    "RescheduleAppointment",
    "CancelAppointment",
    "CorrectContact",
    "ReassignAdvisor",
]

PAYLOADS: dict[str, type[BaseModel]] = {
    "BookAppointment": BookingRequest,
    "RescheduleAppointment": RescheduleRequest,
    "CancelAppointment": CancelRequest,
    "CorrectContact": ContactCorrection,
    "ReassignAdvisor": ReassignRequest,
}

RequestId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=255,
        description="Unique per request of one calling system: the idempotency key. A request "
        "sent again with the same id and payload takes effect once and gets the first answer.",
    ),
]
CallingSystem = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=100,
        description="The sending system's name. On a partner's own topic it may be left out: "
        "the topic names the caller, and a name that disagrees is refused (403). Required on "
        "the deprecated shared booking-requests.v1.",
    ),
]

# Kafka callers own appointments and idempotency keys under this prefix, so that no API key's
# name (which cannot start with it) can ever be taken for a partner system, or the reverse.
KAFKA_CALLER_PREFIX = "kafka:"


def kafka_caller(system: str) -> str:
    """The owner name of a system's appointments booked over Kafka: `kafka:<system>`."""
    return f"{KAFKA_CALLER_PREFIX}{system}"


def kafka_system(caller: str) -> str | None:
    """The system behind a Kafka owner name; None for an API key's name."""
    return (
        caller.removeprefix(KAFKA_CALLER_PREFIX) if caller.startswith(KAFKA_CALLER_PREFIX) else None
    )


class RequestEnvelope(BaseModel):
    """Any request, its payload still unchecked: what booking reads first, so that a request
    with a valid envelope but an invalid payload is answered with the payload's field errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: RequestId
    calling_system: CallingSystem = None
    request_type: RequestType
    appointment_id: uuid.UUID | None = Field(
        default=None, description="The appointment to change; absent for BookAppointment."
    )
    sent_at: AwareDatetime | None = None
    payload: dict[str, Any]

    @model_validator(mode="after")
    def _target(self) -> RequestEnvelope:
        if self.request_type == "BookAppointment" and self.appointment_id is not None:
            raise FieldErrors([("appointment_id", "a new booking has no appointment_id")])
        if self.request_type != "BookAppointment" and self.appointment_id is None:
            raise FieldErrors([("appointment_id", f"{self.request_type} needs appointment_id")])
        return self


def _request_type_required(schema: dict[str, Any]) -> None:
    # The models default it (so code builds requests by class), but booking reads the envelope
    # first and refuses a request without one: the published schema says what must be sent.
    schema["required"] = ["request_type", *schema.get("required", [])]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_request_type_required)

    request_id: RequestId
    calling_system: CallingSystem = None
    sent_at: AwareDatetime | None = None


class BookAppointment(_Request):
    """Key: the request id."""

    request_type: Literal["BookAppointment"] = "BookAppointment"
    payload: BookingRequest


class _Change(_Request):
    """Key: the appointment id, so one appointment's changes keep their order."""

    appointment_id: uuid.UUID


class RescheduleAppointment(_Change):
    request_type: Literal["RescheduleAppointment"] = "RescheduleAppointment"
    payload: RescheduleRequest


class CancelAppointment(_Change):
    request_type: Literal["CancelAppointment"] = "CancelAppointment"
    payload: CancelRequest


class CorrectContact(_Change):
    request_type: Literal["CorrectContact"] = "CorrectContact"
    payload: ContactCorrection


class ReassignAdvisor(_Change):
    request_type: Literal["ReassignAdvisor"] = "ReassignAdvisor"
    payload: ReassignRequest


AnyBookingRequest = Annotated[
    BookAppointment | RescheduleAppointment | CancelAppointment | CorrectContact | ReassignAdvisor,
    Field(discriminator="request_type"),
]

REQUEST_TYPES: dict[str, type[_Request]] = {
    model.model_fields["request_type"].default: model
    for model in (
        BookAppointment,
        RescheduleAppointment,
        CancelAppointment,
        CorrectContact,
        ReassignAdvisor,
    )
}

REQUEST_ID_HEADER = "request_id"
CALLING_SYSTEM_HEADER = "calling_system"


def request_key(request: _Request) -> bytes:
    """New bookings are keyed by request id, changes by appointment id."""
    if isinstance(request, _Change):
        return str(request.appointment_id).encode()
    return request.request_id.encode()
