"""What « Mon rendez-vous » shows, already in words: the same dates, zone, guide and wording as
the emails (visio_runtime.french_dates and visio_runtime.guide), so the page and the message the
person holds never disagree."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
from visio_runtime import french_dates as dates
from visio_runtime import guide
from visio_runtime.teams import join_url_allowed
from visio_shared import Device

from visio_booking.selfservice import Phase
from visio_booking.settings import BookingSettings

WHERE_THE_LINK_IS = "affiché sur cette page, sous « Le lien du rendez-vous »"

CANCELLED_BY = {
    "user": "Il a été annulé à votre demande le {on}.",
    "advisor": "Votre conseiller Caf ne peut pas assurer ce rendez-vous : il a été annulé le "
    "{on}. Nous vous prions de nous en excuser.",
    "administrative": "Votre Caf a annulé ce rendez-vous le {on}.",
}


def appointment_context(
    row: asyncpg.Record, phase: Phase, settings: BookingSettings
) -> dict[str, Any]:
    zone = dates.appointment_zone(row["timezone"], row["caf_code"])
    start = row["start_at"].astimezone(zone)
    device = Device(row["device"])
    join_url = row["join_url"]
    cancelled = None
    if phase is Phase.CANCELLED:
        on = dates.french_datetime(row["cancelled_at"].astimezone(zone), with_year=True)
        cancelled = CANCELLED_BY.get(row["status_reason"], CANCELLED_BY["administrative"])
        cancelled = cancelled.format(on=f"{on} ({dates.zone_label(zone)})")
    return {
        "phase": phase.value,
        "date": dates.french_date(start, with_year=True),
        "time": dates.french_time(start),
        "zone": dates.zone_label(zone),
        "duration": dates.duration_text(row["duration_minutes"]),
        "advisor": row["advisor_name"],
        "appointment_subject": row["subject"],
        "join_url": join_url if join_url_allowed(join_url, settings.teams_url_allowlist) else None,
        "meeting_failed": row["status"] == "meeting_failed",
        "cancelled": cancelled,
        "device_note": guide.DEVICE_NOTE[device],
        "guide_paths": guide.guide_paths(
            device,
            settings.app_store_url,
            settings.google_play_url,
            where_the_link_is=WHERE_THE_LINK_IS,
        ),
        "guide": guide,
        "portal_url": settings.booking_portal(row["caf_code"]),
        **caf_context(row, settings),
    }


def caf_context(row: asyncpg.Record, settings: BookingSettings) -> dict[str, Any]:
    """Whose Caf (visio_shared.caf_directory) and the CGU version the person accepted."""
    caf = settings.cafs().get(row["caf_code"])
    return {
        "caf_name": caf.name if caf.name.startswith("Caf ") else "Caf",
        "caf_contact_url": caf.contact_url,
        "caf_phone": caf.phone,
        "caf_hours": caf.hours,
        "cgu_version": row["cgu_version"],
        "cgu_url": settings.cgu_url(row["cgu_version"]),
    }


def when_text(row: asyncpg.Record) -> str:
    """`mardi 1er décembre 2026 à 10 h 00 (heure de La Réunion)`."""
    zone = dates.appointment_zone(row["timezone"], row["caf_code"])
    start: datetime = row["start_at"].astimezone(zone)
    return f"{dates.french_datetime(start, with_year=True)} ({dates.zone_label(zone)})"
