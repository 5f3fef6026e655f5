"""The HTTP API's answers. The request bodies are shared with the inbound topic and live in
`visio_shared.booking_requests`, so a Kafka request is validated exactly like an HTTP call."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, EmailStr, Field, model_validator
from visio_shared.booking_requests import (
    AdvisorIn,
    BookingRequest,
    CancelRequest,
    ConsentIn,
    ContactCorrection,
    FieldErrors,
    ReassignRequest,
    RescheduleRequest,
    UserIn,
)

__all__ = [
    "AdvisorIn",
    "AppointmentView",
    "BookingAccepted",
    "BookingRequest",
    "CancelRequest",
    "CguCurrent",
    "ConsentIn",
    "ContactCorrection",
    "FieldErrors",
    "FieldProblem",
    "HistoryEntry",
    "ProblemDocument",
    "ReassignRequest",
    "RescheduleRequest",
    "UserIn",
]


class BookingAccepted(BaseModel):
    """The answer to a booking or a change: where the appointment stands right after it."""

    appointment_id: uuid.UUID
    revision: int = Field(description="Raised by every change; carried in every event.")
    status: str


class HistoryEntry(BaseModel):
    status: str = Field(
        description="The step: a status reached (requested, meeting_ready, confirmed, "
        "meeting_failed, notification_failed, cancelled) or a change (rescheduled, "
        "contact_corrected, advisor_reassigned, meeting_rescheduled, meeting_cancelled, "
        "notification_sent, link_requested: the person asked for the email with the links "
        "again, detail 'resend' or 'fresh_link')."
    )
    revision: int = Field(description="The appointment's revision the step speaks of.")
    at: datetime
    detail: str | None = None


class AppointmentView(BaseModel):
    appointment_id: uuid.UUID
    status: str = Field(
        description="requested, meeting_ready, confirmed, meeting_failed, notification_failed, "
        "cancelled, held or no_show."
    )
    status_reason: str | None
    revision: int
    caf_code: str
    start: datetime
    end: datetime
    duration_minutes: int
    timezone: str
    subject: str
    advisor: dict[str, str]
    join_url: str | None = Field(description="Once the meeting is ready; none once cancelled.")
    calling_system: str = Field(description="The caller that booked it.")
    history: list[HistoryEntry]


class FieldProblem(BaseModel):
    field: str = Field(description="Dotted path in the body (user.email), or a header's name.")
    message: str


class ProblemDocument(BaseModel):
    """An error, as RFC 9457 has it, with each invalid field named."""

    type: str = Field(description="https://visio-rdv.caf.fr/problems/<kind>")
    title: str
    status: int
    detail: str
    instance: str
    errors: list[FieldProblem] | None = Field(default=None, description="On 422 only.")


class CguCurrent(BaseModel):
    version: str
    sha256: str
    url: str


class ErasureRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    email: EmailStr | None = Field(
        default=None, description="The person's address: every appointment booked with it."
    )
    appointment_id: uuid.UUID | None = Field(default=None, description="Or one appointment.")
    reason: str = Field(
        min_length=1,
        max_length=500,
        description="Why (the person's request, a decision…), without their details.",
    )

    @model_validator(mode="after")
    def _one_target(self) -> ErasureRequest:
        if (self.email is None) == (self.appointment_id is None):
            raise ValueError("give either email or appointment_id")
        return self
