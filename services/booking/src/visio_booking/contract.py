"""The booking request: the contract other Caf systems code against. Strict: unknown fields are
rejected, types are not coerced, and every rule a person would find fair is checked with a
message that names the field."""

from __future__ import annotations

import uuid
import zoneinfo
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from visio_shared import CGU_VERSIONS, Device, current_cgu, expected_timezone
from visio_shared.cafs import OVERSEAS_CAFS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class AdvisorIn(_Strict):
    id: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9@._-]+$",
        description="The advisor's Entra object id (or user principal name).",
    )
    display_name: str = Field(min_length=1, max_length=200)


class UserIn(_Strict):
    first_name: str = Field(min_length=1, max_length=100)
    last_name: str = Field(min_length=1, max_length=100)
    email: EmailStr
    device: Device = Field(description="What the person will join with.")


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
    caf_code: str = Field(pattern=r"^\d{3}$", description="The Caf's three-digit code.")
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
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"{value!r} is not an IANA time zone") from exc
        return value

    @field_validator("duration_minutes")
    @classmethod
    def _duration_in_bounds(cls, value: int, info: ValidationInfo) -> int:
        bounds = (info.context or {}).get("duration_bounds", (10, 120))
        if not bounds[0] <= value <= bounds[1]:
            raise ValueError(f"must be between {bounds[0]} and {bounds[1]} minutes")
        return value

    @model_validator(mode="after")
    def _coherent(self, info: ValidationInfo) -> BookingRequest:
        context = info.context or {}
        now: datetime = context.get("now") or datetime.now(UTC)
        horizon_days: int = context.get("horizon_days", 180)
        errors: list[tuple[str, str]] = []
        if self.start <= now:
            errors.append(("start", "must be in the future"))
        elif self.start > now + timedelta(days=horizon_days):
            errors.append(("start", f"must be within {horizon_days} days"))
        if self.consent.accepted_at > now + timedelta(minutes=5):
            errors.append(("consent.accepted_at", "cannot be in the future"))
        try:
            zone = zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            zone = None
        if zone is not None:
            local_offset = self.start.astimezone(zone).utcoffset()
            if local_offset != self.start.utcoffset():
                errors.append(
                    (
                        "start",
                        f"offset {self.start.strftime('%z')} does not match {self.timezone} "
                        f"on that date (expected {_format_offset(local_offset)})",
                    )
                )
            expected = expected_timezone(self.caf_code)
            if self.caf_code in OVERSEAS_CAFS and self.timezone != expected:
                territory = OVERSEAS_CAFS[self.caf_code].territory
                errors.append(("timezone", f"Caf {self.caf_code} ({territory}) is in {expected}"))
        if errors:
            raise FieldErrors(errors)
        return self


class FieldErrors(ValueError):
    """Several cross-field errors at once, each naming its field."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors))
        self.errors = errors


def _format_offset(offset: timedelta | None) -> str:
    if offset is None:
        return "?"
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


class BookingAccepted(BaseModel):
    appointment_id: uuid.UUID
    status: Literal["requested"]


class HistoryEntry(BaseModel):
    status: str
    revision: int
    at: datetime
    detail: str | None = None


class AppointmentView(BaseModel):
    appointment_id: uuid.UUID
    status: str
    status_reason: str | None
    revision: int
    caf_code: str
    start: datetime
    end: datetime
    duration_minutes: int
    timezone: str
    subject: str
    advisor: dict[str, str]
    join_url: str | None
    history: list[HistoryEntry]


class CguCurrent(BaseModel):
    version: str
    sha256: str
    url: str
