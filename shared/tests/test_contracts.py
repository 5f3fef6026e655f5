from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError
from visio_shared import (
    CGU_VERSIONS,
    EVENT_TYPES,
    AppointmentRequested,
    Headers,
    MeetingReady,
    Topics,
    current_cgu,
    parse_event,
    publish_event,
)
from visio_shared.booking_replies import PARTNER_REPLY_TYPES
from visio_shared.booking_requests import REQUEST_TYPES
from visio_shared.schemas import SCHEMA_DIR, generate


def requested(**overrides: object) -> AppointmentRequested:
    appointment_id = uuid.uuid4()
    fields: dict[str, object] = {
        "appointment_id": appointment_id,
        "revision": 1,
        "correlation_id": appointment_id,
        "caf_code": "974",
        "advisor": {"id": "6f1c2a4e-8b1d-4c55-9a51-2f9e6f0c1d11", "display_name": "Claire Martin"},
        "start": "2026-12-03T10:00:00+04:00",
        "duration_minutes": 30,
        "timezone": "Indian/Reunion",
        "subject": "Prime d'activité",
        "user": {
            "first_name": "Jeanne",
            "last_name": "Dupont",
            "email": "jeanne.dupont@example.fr",
            "device": "smartphone",
        },
        "consent": {
            "cgu_version": "1",
            "cgu_sha256": current_cgu().sha256,
            "accepted_at": "2026-11-26T09:12:00Z",
            "recording_authorised": True,
            "channel": "api",
        },
        "calling_system": "caf.fr",
    }
    fields.update(overrides)
    return AppointmentRequested.model_validate(fields)


def test_committed_json_schemas_match_the_models() -> None:
    generated = generate()
    committed = {path.name: path.read_text(encoding="utf-8") for path in SCHEMA_DIR.glob("*.json")}
    assert set(committed) == set(generated), "run: uv run python -m visio_shared.schemas"
    for name, text in generated.items():
        assert committed[name] == text, (
            f"{name} drifted; run: uv run python -m visio_shared.schemas"
        )


def test_every_event_type_has_a_schema_with_its_envelope() -> None:
    assert set(EVENT_TYPES) >= {
        "AppointmentRequested",
        "MeetingReady",
        "MeetingFailed",
        "NotificationSent",
        "NotificationFailed",
        "ConsentRecorded",
    }
    files = generate()
    for name, text in files.items():
        schema = json.loads(text)
        if name.removesuffix(".v1.json") in REQUEST_TYPES:
            continue  # what partners send: no envelope (below)
        assert {"event_id", "event_type", "correlation_id", "occurred_at"} <= set(
            schema["properties"]
        )


def test_partners_requests_replies_and_outcomes_have_their_schema_files() -> None:
    files = generate()
    for name in [*REQUEST_TYPES, *PARTNER_REPLY_TYPES]:
        assert f"{name}.v1.json" in files, name
    request = json.loads(files["BookAppointment.v1.json"])
    assert {"request_id", "request_type", "payload"} == set(request["required"])
    outcome = json.loads(files["AppointmentOutcome.v1.json"])
    assert outcome["properties"]["outcome"]["type"] == "string"  # an open list, no enum
    assert {"appointment_id", "revision", "outcome"} <= set(outcome["required"])
    assert "occurred_at" in outcome["properties"]  # the time of the change


def test_cgu_version_1_is_the_seed_text_with_its_sha256() -> None:
    version = CGU_VERSIONS["1"]
    assert version.computed_sha256() == version.sha256
    assert version.text().startswith("Conditions générales d'utilisation du service de Visio RDV")
    assert "fera foi en cas de contestation" in version.text()
    assert current_cgu() is version


def test_events_round_trip_through_json_and_parse_by_type() -> None:
    event = requested()
    parsed = parse_event(event.to_json_bytes())
    assert parsed == event
    assert isinstance(parsed, AppointmentRequested)
    assert parsed.occurred_at.tzinfo is not None


def test_events_are_frozen_and_consumers_ignore_fields_they_do_not_know() -> None:
    event = requested()
    with pytest.raises(ValidationError):
        event.revision = 2  # type: ignore[misc]
    data = json.loads(event.to_json_bytes())
    data["added_later"] = "a new optional field"
    assert parse_event(json.dumps(data)) == event


def test_an_invalid_payload_of_a_known_type_is_refused_with_its_fields() -> None:
    with pytest.raises(ValidationError) as refused:
        parse_event(b'{"event_type": "MeetingReady", "join_url": 3}')
    fields = {error["loc"][-1] for error in refused.value.errors()}
    assert {"appointment_id", "correlation_id", "graph_event_id"} <= fields


def test_naive_times_are_refused_and_aware_ones_kept_in_utc() -> None:
    with pytest.raises(ValidationError):
        requested(start="2026-12-03T10:00:00")
    event = requested(occurred_at=datetime(2026, 12, 3, 10, tzinfo=UTC))
    assert event.occurred_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_topic_names_carry_the_prefix() -> None:
    topics = Topics("test-42")
    assert topics.appointments == "test-42.appointments.v1"
    assert topics.booking_requests == "test-42.booking-requests.v1"
    assert topics.dlq("meetings") == "test-42.meetings.dlq"
    assert topics.group("consent") == "test-42.consent"
    assert Topics().meetings == "visio-rdv.meetings.v1"
    assert len(set(topics.all())) == len(topics.all()) == 11


class RecordingPublisher:
    def __init__(self) -> None:
        self.calls: list[tuple[bytes, str, bytes | None, dict[str, str] | None]] = []

    async def publish(
        self,
        message: bytes,
        topic: str,
        *,
        key: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.calls.append((message, topic, key, headers))


async def test_publish_event_keys_by_appointment_and_repeats_the_envelope_in_headers() -> None:
    event = requested()
    ready = MeetingReady(
        **event.caused(appointment_id=event.appointment_id, revision=1),
        join_url="https://teams.microsoft.com/l/meetup-join/x",
        graph_event_id="AAMk",
        advisor_id="6f1c2a4e-8b1d-4c55-9a51-2f9e6f0c1d11",
    )
    publisher = RecordingPublisher()
    await publish_event(publisher, "t", ready)
    message, topic, key, headers = publisher.calls[0]
    assert topic == "t"
    assert key == str(event.appointment_id).encode()
    assert headers is not None
    assert headers[Headers.EVENT_ID] == str(ready.event_id)
    assert headers[Headers.EVENT_TYPE] == "MeetingReady"
    assert headers[Headers.CORRELATION_ID] == str(event.correlation_id)
    assert headers[Headers.CAUSATION_ID] == str(event.event_id)
    assert parse_event(message) == ready
