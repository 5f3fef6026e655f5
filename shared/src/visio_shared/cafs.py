"""The overseas Cafs and their time zones: booking checks an appointment's zone against its Caf,
notifications says the zone in words (« heure de La Réunion »). Every Caf's zone is in the
directory (`visio_shared.caf_directory`); these are the words said of the overseas ones."""

from __future__ import annotations

from dataclasses import dataclass

from visio_shared.caf_directory import caf_directory


@dataclass(frozen=True)
class OverseasCaf:
    caf_code: str
    territory: str
    timezone: str
    time_label: str  # as said in an email: « 10 h 00, heure de La Réunion »


OVERSEAS_CAFS: dict[str, OverseasCaf] = {
    caf.caf_code: caf
    for caf in (
        OverseasCaf("971", "Guadeloupe", "America/Guadeloupe", "heure de la Guadeloupe"),
        OverseasCaf("972", "Martinique", "America/Martinique", "heure de la Martinique"),
        OverseasCaf("973", "Guyane", "America/Cayenne", "heure de la Guyane"),
        OverseasCaf("974", "La Réunion", "Indian/Reunion", "heure de La Réunion"),
        OverseasCaf("976", "Mayotte", "Indian/Mayotte", "heure de Mayotte"),
    )
}

METROPOLITAN_TIMEZONE = "Europe/Paris"
METROPOLITAN_TIME_LABEL = "heure de Paris"


def expected_timezone(caf_code: str) -> str:
    """The zone an appointment of this Caf is held in (the directory's)."""
    return caf_directory().get(caf_code).timezone


def time_label(caf_code: str) -> str:
    caf = OVERSEAS_CAFS.get(caf_code)
    return caf.time_label if caf else METROPOLITAN_TIME_LABEL
