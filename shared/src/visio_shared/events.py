"""The integration events of Visio RDV, one frozen model per event type."""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, EmailStr, Field, TypeAdapter

from visio_shared.envelope import AppointmentEvent, Envelope


class Device(enum.StrEnum):
    COMPUTER = "computer"
    SMARTPHONE = "smartphone"
    TABLET = "tablet"


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Advisor(_Part):
    id: str = Field(min_length=1, max_length=64, description="The advisor's Entra object id.")
    display_name: str = Field(min_length=1, max_length=200)


class Person(_Part):
    first_name: str = Field(min_length=1, max_length=100)
    last_name: str = Field(min_length=1, max_length=100)
    email: EmailStr
    device: Device


class ConsentGiven(_Part):
    cgu_version: str
    cgu_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    accepted_at: AwareDatetime
    recording_authorised: bool
    channel: str = Field(description="How the person accepted: 'api' or 'kafka'.")


class AppointmentRequested(AppointmentEvent):
    event_type: Literal["AppointmentRequested"] = "AppointmentRequested"
    caf_code: str = Field(pattern=r"^\d{3}$")
    advisor: Advisor
    start: AwareDatetime
    duration_minutes: int = Field(ge=1)
    timezone: str
    subject: str
    user: Person
    consent: ConsentGiven
    calling_system: str


class MeetingReady(AppointmentEvent):
    event_type: Literal["MeetingReady"] = "MeetingReady"
    join_url: str
    graph_event_id: str
    online_meeting_id: str | None = None
    advisor_id: str


class MeetingFailed(AppointmentEvent):
    event_type: Literal["MeetingFailed"] = "MeetingFailed"
    reason: str = Field(description="A short machine-readable cause, e.g. 'graph_forbidden'.")
    detail: str = ""


class NotificationSent(AppointmentEvent):
    event_type: Literal["NotificationSent"] = "NotificationSent"
    kind: Literal["confirmation", "update", "cancellation", "reminder"]
    message_id: str


class NotificationFailed(AppointmentEvent):
    event_type: Literal["NotificationFailed"] = "NotificationFailed"
    kind: Literal["confirmation", "update", "cancellation", "reminder"]
    reason: str
    detail: str = ""


class LedgerEntry(_Part):
    seq: int
    kind: str
    hash: str


class ConsentRecorded(AppointmentEvent):
    event_type: Literal["ConsentRecorded"] = "ConsentRecorded"
    subject_ref: str = Field(description="Keyed HMAC of the normalised email; never the email.")
    cgu_version: str
    entries: list[LedgerEntry]


AnyEvent = Annotated[
    AppointmentRequested
    | MeetingReady
    | MeetingFailed
    | NotificationSent
    | NotificationFailed
    | ConsentRecorded,
    Field(discriminator="event_type"),
]

EVENT_TYPES: dict[str, type[Envelope]] = {
    model.model_fields["event_type"].default: model
    for model in (
        AppointmentRequested,
        MeetingReady,
        MeetingFailed,
        NotificationSent,
        NotificationFailed,
        ConsentRecorded,
    )
}

_any_event: TypeAdapter[Any] = TypeAdapter(AnyEvent)


def parse_event(data: bytes | str) -> Envelope:
    """Parse one event from its JSON bytes; raises pydantic.ValidationError if it is not one."""
    event: Envelope = _any_event.validate_json(data)
    return event
