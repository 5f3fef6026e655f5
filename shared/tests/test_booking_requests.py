"""The inbound-topic contract: requests with the HTTP payloads in an envelope, and the replies."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError
from visio_shared import booking_requests
from visio_shared.booking_replies import (
    BookingAccepted,
    BookingRejected,
    reply_correlation,
    reply_key,
)
from visio_shared.booking_requests import (
    REQUEST_TYPES,
    BookAppointment,
    BookingRequest,
    CancelAppointment,
    ConsentIn,
    ContactCorrection,
    FieldErrors,
    RequestEnvelope,
    RescheduleRequest,
    request_key,
)
from visio_shared.cgu_versions import CguVersion

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def payload(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
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
            "accepted_at": "2026-11-26T09:00:00Z",
            "recording_authorised": True,
        },
    }
    data.update(overrides)
    return data


def messages(exc: ValidationError) -> dict[str, str]:
    out: dict[str, str] = {}
    for error in exc.errors():
        raised = (error.get("ctx") or {}).get("error")
        if isinstance(raised, FieldErrors):
            out.update(dict(raised.errors))
        else:
            out[".".join(str(part) for part in error["loc"])] = error["msg"]
    return out


def test_a_typed_request_is_the_envelope_booking_reads_with_the_http_payload() -> None:
    # Built by a producer, validated with the default rules and the real clock.
    start = (datetime.now(UTC) + timedelta(days=7)).astimezone(ZoneInfo("Indian/Reunion"))
    accepted = {"cgu_version": "1", "accepted_at": datetime.now(UTC).isoformat()}
    body = payload(start=start.replace(microsecond=0).isoformat())
    body["consent"] = {**body["consent"], **accepted}
    book = BookAppointment(
        request_id="portal-42",
        calling_system="caf-portal",
        payload=BookingRequest.model_validate(body),
    )
    wire = json.loads(book.model_dump_json())
    assert wire["request_type"] == "BookAppointment"
    envelope = RequestEnvelope.model_validate(wire)
    assert envelope.request_id == "portal-42" and envelope.appointment_id is None
    assert BookingRequest.model_validate(envelope.payload) == book.payload
    assert request_key(book) == b"portal-42"

    appointment_id = uuid.uuid4()
    cancel = CancelAppointment.model_validate(
        {
            "request_id": "r",
            "calling_system": "s",
            "appointment_id": str(appointment_id),
            "payload": {"reason": "advisor"},
        }
    )
    assert request_key(cancel) == str(appointment_id).encode()
    assert set(REQUEST_TYPES) == {
        "BookAppointment",
        "RescheduleAppointment",
        "CancelAppointment",
        "CorrectContact",
        "ReassignAdvisor",
    }


def test_the_envelope_names_what_is_missing_or_unknown() -> None:
    base = {"request_id": "r", "calling_system": "s", "payload": {}}
    with pytest.raises(ValidationError) as refused:
        RequestEnvelope.model_validate({**base, "request_type": "BookSomething", "extra": 1})
    assert set(messages(refused.value)) == {"request_type", "extra"}
    with pytest.raises(ValidationError) as refused:
        RequestEnvelope.model_validate({**base, "request_type": "CorrectContact"})
    assert messages(refused.value) == {"appointment_id": "CorrectContact needs appointment_id"}
    with pytest.raises(ValidationError) as refused:
        RequestEnvelope.model_validate(
            {**base, "request_type": "BookAppointment", "appointment_id": str(uuid.uuid4())}
        )
    assert messages(refused.value) == {"appointment_id": "a new booking has no appointment_id"}


def test_a_reschedule_is_checked_against_the_appointments_zone() -> None:
    context = {"now": NOW, "timezone": "Indian/Reunion"}
    moved = RescheduleRequest.model_validate(
        {"start": "2026-12-04T11:00:00+04:00"}, context=context
    )
    assert moved.duration_minutes is None
    with pytest.raises(ValidationError) as refused:
        RescheduleRequest.model_validate({"start": "2026-12-04T11:00:00+01:00"}, context=context)
    assert messages(refused.value) == {
        "start": "offset +0100 does not match Indian/Reunion on that date (expected +04:00)"
    }
    with pytest.raises(ValidationError) as refused:
        RescheduleRequest.model_validate({}, context=context)
    assert messages(refused.value) == {
        "(body)": "give a new start, a new duration_minutes, or both"
    }
    with pytest.raises(ValidationError) as refused:
        RescheduleRequest.model_validate(
            {"duration_minutes": 200}, context={**context, "duration_bounds": (15, 90)}
        )
    assert "between 15 and 90 minutes" in messages(refused.value)["duration_minutes"]


def test_a_correction_names_at_least_one_field() -> None:
    assert ContactCorrection.model_validate({"email": "j@example.fr"}).email == "j@example.fr"
    with pytest.raises(ValidationError) as refused:
        ContactCorrection.model_validate({})
    assert "(body)" in messages(refused.value)


def test_an_outdated_cgu_version_is_refused_with_the_current_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    second = CguVersion("2", "0" * 64, date(2026, 1, 1), "v1.txt")
    versions = {**booking_requests.CGU_VERSIONS, "2": second}
    monkeypatch.setattr(booking_requests, "CGU_VERSIONS", versions)
    monkeypatch.setattr(booking_requests, "current_cgu", lambda: second)
    with pytest.raises(ValidationError) as refused:
        ConsentIn.model_validate(
            {
                "cgu_version": "1",
                "accepted_at": "2026-11-26T09:00:00Z",
                "recording_authorised": True,
            }
        )
    assert messages(refused.value) == {
        "cgu_version": "Value error, CGU version '1' is outdated; the current version is '2'"
    }


def test_replies_carry_the_request_and_are_keyed_by_calling_system() -> None:
    appointment_id = uuid.uuid4()
    accepted = BookingAccepted(
        correlation_id=appointment_id,
        request_id="portal-42",
        request_type="BookAppointment",
        calling_system="caf-portal",
        appointment_id=appointment_id,
        revision=1,
        status="requested",
    )
    assert BookingAccepted.model_validate_json(accepted.to_json_bytes()) == accepted
    assert reply_key(accepted) == b"caf-portal"
    rejected = BookingRejected(
        correlation_id=reply_correlation(None, "orphan"),
        request_id="orphan",
        status=400,
        type="https://visio-rdv.caf.fr/problems/malformed",
        title="Malformed JSON",
        detail="the request is not a JSON object",
    )
    data = json.loads(rejected.to_json_bytes())
    assert data["event_type"] == "BookingRejected" and data["errors"] == []
    assert reply_key(rejected) == b"orphan"  # no system named: answered under the request id
    assert reply_correlation(None, "orphan") == rejected.correlation_id
