"""The booking contract's rules, one by one: what a caller gets wrong is named, kindly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from visio_booking.contract import BookingRequest
from visio_runtime.problems import field_errors

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def body(**overrides: Any) -> dict[str, Any]:
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


def errors_of(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ValidationError) as refused:
        BookingRequest.model_validate(data, context={"now": NOW})
    return {error["field"]: error["message"] for error in field_errors(refused.value.errors())}


def test_the_issue_example_is_accepted() -> None:
    booking = BookingRequest.model_validate(body(), context={"now": NOW})
    assert booking.start == datetime(2026, 12, 3, 6, 0, tzinfo=UTC)
    assert booking.consent.recording_authorised is True


@pytest.mark.parametrize(
    ("caf_code", "zone", "start"),
    [
        ("971", "America/Guadeloupe", "2026-12-03T10:00:00-04:00"),
        ("972", "America/Martinique", "2026-12-03T10:00:00-04:00"),
        ("973", "America/Cayenne", "2026-12-03T10:00:00-03:00"),
        ("974", "Indian/Reunion", "2026-12-03T10:00:00+04:00"),
        ("976", "Indian/Mayotte", "2026-12-03T10:00:00+03:00"),
        ("069", "Europe/Paris", "2026-12-03T10:00:00+01:00"),
    ],
)
def test_every_overseas_caf_is_accepted_in_its_zone(caf_code: str, zone: str, start: str) -> None:
    booking = BookingRequest.model_validate(
        body(caf_code=caf_code, timezone=zone, start=start), context={"now": NOW}
    )
    assert booking.timezone == zone


def test_an_overseas_caf_in_another_zone_is_refused() -> None:
    errors = errors_of(body(timezone="Europe/Paris", start="2026-12-03T10:00:00+01:00"))
    assert errors["timezone"] == "Caf 974 (La Réunion) is in Indian/Reunion"


def test_an_offset_that_contradicts_the_zone_is_refused() -> None:
    errors = errors_of(body(start="2026-12-03T10:00:00+01:00"))
    assert "does not match Indian/Reunion" in errors["start"]
    assert "+04:00" in errors["start"]


def test_past_and_far_future_starts_are_refused() -> None:
    assert errors_of(body(start="2026-11-20T10:00:00+04:00"))["start"] == "must be in the future"
    far = (NOW + timedelta(days=400)).astimezone().isoformat()
    assert "within 180 days" in errors_of(body(start=far, timezone="UTC", caf_code="075"))["start"]


def test_each_invalid_field_is_named() -> None:
    data = body(duration_minutes=500, timezone="Mars/Olympus", colour="blue")
    data["user"] = {**data["user"], "email": "not-an-email", "device": "fax"}
    errors = errors_of(data)
    assert errors["duration_minutes"] == "must be between 10 and 120 minutes"
    assert "not an IANA time zone" in errors["timezone"]
    assert "email" in errors["user.email"]
    assert "'computer', 'smartphone' or 'tablet'" in errors["user.device"]
    assert errors["colour"] == "unknown field"


def test_an_unknown_or_outdated_cgu_version_is_refused_with_the_current_one() -> None:
    data = body()
    data["consent"] = {**data["consent"], "cgu_version": "0"}
    assert errors_of(data)["consent.cgu_version"] == (
        "unknown CGU version '0'; the current version is '1'"
    )


def test_recording_authorisation_must_be_explicit() -> None:
    data = body()
    data["consent"] = {k: v for k, v in data["consent"].items() if k != "recording_authorised"}
    assert "consent.recording_authorised" in errors_of(data)
    data["consent"]["recording_authorised"] = "yes"
    assert errors_of(data)["consent.recording_authorised"] == "Input should be a valid boolean"


@pytest.mark.parametrize("hostile", ["nul\u0000byte", "Jeanne\r\nBcc: x@example.org", "tab\tbed"])
def test_control_characters_are_refused_in_every_text_field(hostile: str) -> None:
    # Found by `visio-rdv proof inputs`: a NUL reached PostgreSQL and answered 500.
    data = body(subject=hostile)
    data["user"] = {**data["user"], "first_name": hostile}
    data["advisor"] = {**data["advisor"], "display_name": hostile}
    errors = errors_of(data)
    for field in ("subject", "user.first_name", "advisor.display_name"):
        assert errors[field] == "must not contain control characters"
