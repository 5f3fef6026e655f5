"""The streams of the AsyncAPI document (visio_deploy.asyncapi): each topic, who produces it,
its messages and key — the one fact the code does not declare anywhere — and what is read
beyond the apps' subscribers."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel
from visio_shared import EVENT_TYPES, Topics
from visio_shared.booking_replies import PARTNER_REPLY_TYPES, REPLY_TYPES
from visio_shared.booking_requests import REQUEST_TYPES
from visio_shared.checkpoints import CHECKPOINT_EVENT_TYPE, Checkpoint
from visio_shared.topics import PARTNER_REPLIES, PARTNER_REQUESTS

# A partner's topics are one channel each, their address a parameter (AsyncAPI 3.0).
SYSTEM = "{system}"
SYSTEM_PARAMETER = {
    "system": {
        "description": "The partner system, as booking's configuration declares it "
        "(BOOKING_PARTNERS) and its broker principal is named: lower-case letters, digits and "
        "inner hyphens. Only that principal may write its request topic and read its reply "
        "topic (docs/partners.md).",
        "examples": ["caf-portal", "national-scheduler"],
    }
}


@dataclass(frozen=True)
class Stream:
    name: str  # the `Topics` property
    producer: str
    messages: dict[str, type[BaseModel]]  # message name (its event or request type) → payload
    key: str
    summary: str
    routed: bool = True  # envelope events routed by event_type (else: requests, checkpoints)
    # A partner's own topic (`<prefix>.<partner stream>.{system}.v1`): its address is a
    # parameter, and booking's receiving is its configuration's, not its code's.
    partner_stream: str | None = None

    def address(self, topics: Topics) -> str:
        if self.partner_stream is not None:
            return f"{topics.prefix}.{self.partner_stream}.{SYSTEM}.v1"
        address: str = getattr(topics, self.name)
        return address


def _events(*names: str) -> dict[str, type[BaseModel]]:
    return {name: EVENT_TYPES[name] for name in names}


STREAMS = (
    Stream(
        "booking_requests",
        "partners",
        dict(REQUEST_TYPES),
        "the request id for a new booking, the appointment id for a change",
        "Deprecated: the shared request topic of old, where the caller is whatever the "
        "message's calling_system says. Read only while booking's BOOKING_SHARED_REQUESTS_TOPIC "
        "is on (off by default), each message counted in "
        "booking_shared_topic_requests_total; answered on booking-replies.v1. Partners write "
        "their own booking-requests.{system}.v1 (docs/partners.md).",
        routed=False,
    ),
    Stream(
        "booking_replies",
        "booking",
        dict(REPLY_TYPES),
        "the calling system",
        "Deprecated with booking-requests.v1: the answers to the requests on it, keyed by the "
        "calling system, which every reader of this topic sees.",
    ),
    Stream(
        "partner_requests",
        "partners",
        dict(REQUEST_TYPES),
        "the request id for a new booking, the appointment id for a change",
        "One partner system's requests: book, reschedule, cancel, correct, reassign. The topic "
        "names the caller (only the partner's principal may write it): calling_system may be "
        "left out, and one naming another system is refused (403). Each request is answered "
        "on the partner's booking-replies.{system}.v1.",
        routed=False,
        partner_stream=PARTNER_REQUESTS,
    ),
    Stream(
        "partner_replies",
        "booking",
        dict(PARTNER_REPLY_TYPES),
        "the appointment id (a reply that concerns none: the request id)",
        "What one partner system reads, and it alone: the answer to each of its requests "
        "(accepted, with the appointment id, or rejected, with the field errors the HTTP API "
        "would give), and the outcome of every appointment it created each time it changes "
        "(AppointmentOutcome: an open list of values, with revision and time).",
        partner_stream=PARTNER_REPLIES,
    ),
    Stream(
        "appointments",
        "booking",
        _events(
            "AppointmentRequested",
            "AppointmentRescheduled",
            "AppointmentCancelled",
            "ContactCorrected",
            "ContactCorrectionRequested",
            "AdvisorReassigned",
            "AppointmentLinkRequested",
            "RescheduleRequested",
            "AdvisorOutcomeReported",
            "PersonalDataErasureRequested",
        ),
        "the appointment id",
        "Every appointment's life, in order: booked, rescheduled, cancelled, corrected; how "
        "it went, in the words of its advisor signed in; "
        "the person's requests, from a self-service page, for its email again or to confirm a "
        "new address before it replaces theirs; and the "
        "erasure of what every service holds about the person (ids only).",
    ),
    Stream(
        "meetings",
        "meetings",
        _events(
            "MeetingReady",
            "MeetingRescheduled",
            "MeetingCancelled",
            "MeetingFailed",
            "MeetingAttendanceRecorded",
            "MeetingAttendanceUnavailable",
            "MeetingRecordingAvailable",
            "PersonalDataErased",
        ),
        "the appointment id",
        "The Teams meeting of each appointment, or why there is none.",
    ),
    Stream(
        "notifications",
        "notifications",
        _events("NotificationSent", "NotificationFailed", "SmsFailed", "PersonalDataErased"),
        "the appointment id",
        "Each email sent to the person, or why it could not be; each text message that could "
        "never reach them.",
    ),
    Stream(
        "consents",
        "consent",
        _events("ConsentRecorded", "RecordingConsentWithdrawn", "PersonalDataErased"),
        "the appointment id",
        "What the consent ledger recorded (pseudonymous: never an email address).",
    ),
    Stream(
        "consent_checkpoints",
        "consent",
        {CHECKPOINT_EVENT_TYPE: Checkpoint},
        "`consent-ledger` (one partition's order for all checkpoints)",
        "Signed checkpoints of the consent ledger's hash chain (Ed25519 over seq and head hash).",
        routed=False,
    ),
)


# What is read beyond the apps' subscribers, which `subscriptions` cannot see:
# (reader, stream, summary). The ACLs (visio_deploy.acls) are made from these operations too.
READS_BEYOND_THE_APPS = (
    (
        "partners",
        "booking_replies",
        "Each partner system reads the answers to its requests (its own principal, and its own "
        "consumer group `<prefix>.partner.<system>`)",
    ),
    (
        "consent",
        "consents",
        "consent reads its own events back, from the beginning and without a group, to "
        "check the ledger's unsigned tail (`visio-rdv consent verify`)",
    ),
    (
        "consent",
        "consent_checkpoints",
        "consent reads its signed checkpoints back, without a group, to verify the ledger",
    ),
)
