"""Kafka header conventions: every message repeats its envelope's identity in headers, so
operators (kcat, `visio-rdv ops tail`) can read it without decoding the value."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from visio_shared.envelope import AppointmentEvent, Envelope


class Headers:
    EVENT_ID = "event_id"
    EVENT_TYPE = "event_type"
    CORRELATION_ID = "correlation_id"
    CAUSATION_ID = "causation_id"
    SCHEMA_VERSION = "schema_version"
    CONTENT_TYPE = "content-type"

    # Dead letters add these to the original headers.
    DLQ_SOURCE_TOPIC = "dlq.source_topic"
    DLQ_SOURCE_PARTITION = "dlq.source_partition"
    DLQ_SOURCE_OFFSET = "dlq.source_offset"
    DLQ_CONSUMER_GROUP = "dlq.consumer_group"
    DLQ_ERROR_CLASS = "dlq.error_class"
    DLQ_REASON = "dlq.reason"
    DLQ_ATTEMPTS = "dlq.attempts"
    DLQ_FIRST_FAILED_AT = "dlq.first_failed_at"
    DLQ_DEAD_LETTERED_AT = "dlq.dead_lettered_at"
    # Only on a letter whose value (or key) was cut to fit on the broker: the original sizes.
    DLQ_TRUNCATED = "dlq.truncated"
    # The outside party whose unavailability made the record a dead letter (`graph`, `smtp`).
    DLQ_UNAVAILABLE = "dlq.unavailable"
    # How many times `visio-rdv ops heal` replayed this record already (kept on replays).
    AUTO_REPLAYS = "visio.auto_replays"

    @staticmethod
    def for_event(event: Envelope) -> dict[str, str]:
        headers = {
            Headers.EVENT_ID: str(event.event_id),
            Headers.EVENT_TYPE: event.event_type,
            Headers.CORRELATION_ID: str(event.correlation_id),
            Headers.SCHEMA_VERSION: str(event.schema_version),
            Headers.CONTENT_TYPE: "application/json",
        }
        if event.causation_id is not None:
            headers[Headers.CAUSATION_ID] = str(event.causation_id)
        return headers

    @staticmethod
    def decode(
        raw: Mapping[str, bytes | str | None] | Sequence[tuple[str, bytes | None]] | None,
    ) -> dict[str, str]:
        """Kafka headers (a list of (name, bytes) pairs) as a plain dict of strings, whatever
        they hold: bytes that are not UTF-8 read with U+FFFD, a header without a value as ''."""
        if raw is None:
            return {}
        items = raw.items() if isinstance(raw, Mapping) else raw
        return {
            name: value.decode("utf-8", "replace") if isinstance(value, bytes) else value or ""
            for name, value in items
        }


def event_key(event: Envelope) -> bytes:
    """Appointment events are keyed by appointment id so one appointment's events keep order."""
    if isinstance(event, AppointmentEvent):
        return str(event.appointment_id).encode()
    return str(event.correlation_id).encode()
