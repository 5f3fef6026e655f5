"""What a person asks for when they ask to move their appointment (« Changer de créneau »):
the days and parts of the day that suit them, carried by `RescheduleRequested` and by the
partner's `reschedule_requested` outcome."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Weekday = Literal["lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi"]
DayPart = Literal["matin", "midi", "apres-midi", "fin-de-journee"]
# How « Changer de créneau » and the Caf team's email name each part of the day.
DAY_PART_LABELS: dict[str, str] = {
    "matin": "Le matin (8 h – 12 h)",
    "midi": "Entre midi et deux (12 h – 14 h)",
    "apres-midi": "L'après-midi (14 h – 17 h)",
    "fin-de-journee": "En fin de journée (17 h – 19 h)",
}
RESCHEDULE_MESSAGE_MAX = 300


class ReschedulePreferences(BaseModel):
    """When another slot would suit the person, as they ticked it on « Mon rendez-vous »."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    days: list[Weekday] = Field(min_length=1, description="Days of the week that suit them.")
    times: list[DayPart] = Field(
        min_length=1,
        description="Parts of the day: matin (8-12 h), midi (12-14 h), apres-midi (14-17 h), "
        "fin-de-journee (17-19 h), in the appointment's time zone.",
    )
    from_date: date | None = Field(default=None, description="Not before this day.")
    message: str | None = Field(default=None, max_length=RESCHEDULE_MESSAGE_MAX)
