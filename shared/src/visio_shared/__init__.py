"""Visio RDV contracts: the events every service speaks, the topics they travel on, the headers
they carry and the CGU versions booking validates against. Depends on pydantic alone."""

from visio_shared.cafs import OVERSEAS_CAFS, OverseasCaf, expected_timezone, time_label
from visio_shared.cgu_versions import CGU_VERSIONS, CguVersion, current_cgu
from visio_shared.envelope import AppointmentEvent, Envelope
from visio_shared.events import (
    EVENT_TYPES,
    Advisor,
    AdvisorReassigned,
    AppointmentCancelled,
    AppointmentLinkRequested,
    AppointmentRequested,
    AppointmentRescheduled,
    ConsentGiven,
    ConsentRecorded,
    ContactCorrected,
    Device,
    LedgerEntry,
    MeetingAttendanceRecorded,
    MeetingAttendanceUnavailable,
    MeetingCancelled,
    MeetingFailed,
    MeetingReady,
    MeetingRecordingAvailable,
    MeetingRescheduled,
    NotificationFailed,
    NotificationSent,
    Person,
    RecordingConsentWithdrawn,
    parse_event,
)
from visio_shared.headers import Headers
from visio_shared.publishing import publish_event
from visio_shared.topics import Topics

__all__ = [
    "CGU_VERSIONS",
    "EVENT_TYPES",
    "OVERSEAS_CAFS",
    "Advisor",
    "AdvisorReassigned",
    "AppointmentCancelled",
    "AppointmentEvent",
    "AppointmentLinkRequested",
    "AppointmentRequested",
    "AppointmentRescheduled",
    "CguVersion",
    "ConsentGiven",
    "ConsentRecorded",
    "ContactCorrected",
    "Device",
    "Envelope",
    "Headers",
    "LedgerEntry",
    "MeetingAttendanceRecorded",
    "MeetingAttendanceUnavailable",
    "MeetingCancelled",
    "MeetingFailed",
    "MeetingReady",
    "MeetingRecordingAvailable",
    "MeetingRescheduled",
    "NotificationFailed",
    "NotificationSent",
    "OverseasCaf",
    "Person",
    "RecordingConsentWithdrawn",
    "Topics",
    "current_cgu",
    "expected_timezone",
    "parse_event",
    "publish_event",
    "time_label",
]
