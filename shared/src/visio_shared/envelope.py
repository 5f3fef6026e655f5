"""The envelope every event carries, and the part every appointment event adds."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator


def utc_now() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel):
    """Identity and lineage of one event.

    Consumers ignore fields they do not know (contracts grow additively); producers never send
    fields the contract does not name.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    SCHEMA_VERSION: ClassVar[int] = 1

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    event_type: str
    schema_version: int = 1
    occurred_at: AwareDatetime = Field(default_factory=utc_now)
    correlation_id: uuid.UUID = Field(description="The same across one appointment's whole story.")
    causation_id: uuid.UUID | None = Field(
        default=None, description="The event_id of the event that caused this one."
    )

    @field_validator("occurred_at")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    def to_json_bytes(self) -> bytes:
        # pydantic-core's serialiser writes bytes; model_dump_json() decodes them to a str,
        # which `.encode()` then copied back: twice the work for every event published.
        return self.__pydantic_serializer__.to_json(self)

    def caused(self, **fields: Any) -> dict[str, Any]:
        """Lineage fields for an event caused by this one."""
        return {"correlation_id": self.correlation_id, "causation_id": self.event_id, **fields}


class AppointmentEvent(Envelope):
    """An event about one appointment: keyed by its id, ordered by its revision."""

    appointment_id: uuid.UUID
    revision: int = Field(ge=1, description="Raised by every change to the appointment.")
