"""What booking sends back to the Caf systems on Kafka, on each partner's own
`booking-replies.<system>.v1` (and the shared `booking-replies.v1`, for its deprecation window):
the answer to each request (`BookingAccepted`, `BookingRejected`) and the outcome of every
appointment the partner created (`AppointmentOutcome`). The requests are
`visio_shared.booking_requests`.
"""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from visio_shared.envelope import AppointmentEvent, Envelope
from visio_shared.events import ReschedulePreferences


class FieldError(BaseModel):
    model_config = ConfigDict(frozen=True)

    field: str = Field(description="Dotted path in the payload, e.g. user.email.")
    message: str


class BookingReply(Envelope):
    """The answer to one request. On a partner's topic: keyed by the appointment id (so it keeps
    its order with the appointment's outcomes), else by the request id; on the shared
    booking-replies.v1, by the calling system."""

    request_id: str
    request_type: str | None = Field(default=None, description="As sent, when it could be read.")
    calling_system: str | None = Field(
        default=None,
        description="The caller: on a partner's topic, the topic's system; on the shared topic, "
        "as sent, when it was given.",
    )
    appointment_id: uuid.UUID | None = None


class BookingAccepted(BookingReply):
    """The request took effect (or had already: `replayed`)."""

    event_type: Literal["BookingAccepted"] = "BookingAccepted"
    appointment_id: uuid.UUID
    revision: int = Field(ge=1, description="The appointment's revision after the change.")
    status: str
    replayed: bool = Field(
        default=False, description="True when this answers a repeat of an earlier request."
    )


class BookingRejected(BookingReply):
    """The request had no effect: the same problem the HTTP API would answer."""

    event_type: Literal["BookingRejected"] = "BookingRejected"
    status: int = Field(description="The HTTP status the API gives for the same problem.")
    type: str = Field(description="Problem type URI (RFC 9457), as over HTTP.")
    title: str
    detail: str
    errors: list[FieldError] = Field(default_factory=list)


REPLY_TYPES: dict[str, type[BookingReply]] = {
    "BookingAccepted": BookingAccepted,
    "BookingRejected": BookingRejected,
}

# What an appointment became, as booking pushes it to the partner that created it. The list is
# open: a partner must accept (and may ignore) a value it does not know.
KNOWN_OUTCOMES = (
    "confirmed",
    "meeting_failed",
    "notification_failed",
    "cancelled",
    "held",
    "no_show",
    "failed_technical",
)
# Not a status: the person asked to move (see `preferences`); the appointment stands as it is
# until the partner reschedules or cancels it through the normal path.
RESCHEDULE_REQUESTED = "reschedule_requested"


class AppointmentOutcome(AppointmentEvent):
    """What became of an appointment a partner created, each time it changes; keyed by the
    appointment id, so one appointment's outcomes (and its replies) keep their order. The
    newest `revision` wins; `occurred_at` is when booking recorded it."""

    event_type: Literal["AppointmentOutcome"] = "AppointmentOutcome"
    calling_system: str = Field(description="The partner system that created the appointment.")
    outcome: str = Field(
        description="An open list: confirmed (the person was sent the appointment as it now "
        "stands), meeting_failed, notification_failed, cancelled, held, no_show, "
        "failed_technical (held, no_show and failed_technical as the advisor reported them, "
        "else held or no_show from Teams' attendance report), reschedule_requested (the "
        "person asks for another slot: `preferences`). Accept values you do not know.",
        examples=[*KNOWN_OUTCOMES, RESCHEDULE_REQUESTED],
    )
    detail: str | None = Field(default=None, description="Why, in words: a reason, a kind.")
    preferences: ReschedulePreferences | None = Field(
        default=None, description="reschedule_requested: the days and times that suit the person."
    )


# Everything a partner reads on its reply topic.
PARTNER_REPLY_TYPES: dict[str, type[Envelope]] = {
    **REPLY_TYPES,
    "AppointmentOutcome": AppointmentOutcome,
}


def reply_key(reply: BookingReply) -> bytes:
    """On the shared booking-replies.v1: keyed by calling system; a request too broken to name
    its system is answered under its request id."""
    return (reply.calling_system or reply.request_id).encode()


def partner_reply_key(reply: BookingReply) -> bytes:
    """On a partner's own topic: the appointment id when there is one (its outcomes share it,
    so their order holds), else the request id (replies then spread over the partitions)."""
    return str(reply.appointment_id or reply.request_id).encode()


def reply_correlation(calling_system: str | None, request_id: str) -> uuid.UUID:
    """The correlation id of a reply that concerns no appointment: stable per request."""
    return uuid.uuid5(
        uuid.NAMESPACE_URL, f"visio-rdv:booking-request:{calling_system}:{request_id}"
    )
