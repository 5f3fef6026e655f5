"""Graph's `dateTimeTimeZone` values: parsing requests and formatting responses.

Graph stores instants; it answers in UTC unless the client sends
`Prefer: outlook.timezone="..."`. Both IANA and Windows zone names are accepted.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from typing import Any

from visio_fakes.graph_emulator.errors import GraphError

# The Windows zone names most likely to reach this emulator (mainland France, the overseas
# departments, and zones used in Microsoft's own samples).
WINDOWS_ZONES = {
    "utc": "UTC",
    "coordinated universal time": "UTC",
    "greenwich standard time": "Atlantic/Reykjavik",
    "gmt standard time": "Europe/London",
    "romance standard time": "Europe/Paris",
    "w. europe standard time": "Europe/Berlin",
    "central europe standard time": "Europe/Budapest",
    "central european standard time": "Europe/Warsaw",
    "e. europe standard time": "Europe/Chisinau",
    "sa western standard time": "America/La_Paz",
    "sa eastern standard time": "America/Cayenne",
    "mauritius standard time": "Indian/Mauritius",
    "arabian standard time": "Asia/Dubai",
    "e. africa standard time": "Africa/Nairobi",
    "eastern standard time": "America/New_York",
    "central standard time": "America/Chicago",
    "mountain standard time": "America/Denver",
    "pacific standard time": "America/Los_Angeles",
}

_PREFER_TIMEZONE = re.compile(r'outlook\.timezone\s*=\s*"([^"]+)"', re.IGNORECASE)


def resolve_zone(name: str) -> dt.tzinfo:
    iana = WINDOWS_ZONES.get(name.strip().lower(), name.strip())
    try:
        return zoneinfo.ZoneInfo(iana)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise GraphError(
            400,
            "TimeZoneNotSupportedException",
            "A valid TimeZone value must be specified. "
            f"The following TimeZone value is not supported: '{name}'.",
        ) from None


def parse_instant(text: str) -> dt.datetime:
    """Parse an ISO 8601 date-time; Graph sends 7 fractional digits, Python reads 6."""
    cleaned = re.sub(r"(\.\d{6})\d+", r"\1", text.strip())
    return dt.datetime.fromisoformat(cleaned)


def parse_date_time_time_zone(value: Any, field: str) -> tuple[dt.datetime, str]:
    """Return (instant in UTC, time zone name as sent) for a `dateTimeTimeZone` object."""
    if not isinstance(value, dict) or not isinstance(value.get("dateTime"), str):
        raise GraphError(
            400,
            "ErrorInvalidRequest",
            f"The '{field}' property must be a dateTimeTimeZone with a 'dateTime' string.",
        )
    zone_name = value.get("timeZone")
    if not isinstance(zone_name, str) or not zone_name.strip():
        raise GraphError(
            400,
            "TimeZoneNotSupportedException",
            "A valid TimeZone value must be specified. "
            f"The following TimeZone value is not supported: '{zone_name or ''}'.",
        )
    zone = resolve_zone(zone_name)
    try:
        local = parse_instant(value["dateTime"])
    except ValueError:
        raise GraphError(
            400,
            "ErrorInvalidRequest",
            f"Cannot convert the literal '{value['dateTime']}' to the expected type "
            f"'Edm.DateTime' of '{field}'.",
        ) from None
    if local.tzinfo is None:
        local = local.replace(tzinfo=zone)
    return local.astimezone(dt.UTC), zone_name


def format_date_time_time_zone(instant: dt.datetime, zone_name: str) -> dict[str, str]:
    local = instant.astimezone(resolve_zone(zone_name))
    return {
        "dateTime": f"{local:%Y-%m-%dT%H:%M:%S}.{local.microsecond:06d}0",
        "timeZone": zone_name,
    }


def format_utc(instant: dt.datetime) -> str:
    """Graph's DateTimeOffset rendering, e.g. 2024-05-01T08:00:00.0000000Z."""
    utc = instant.astimezone(dt.UTC)
    if utc.year >= 1000:  # isoformat's digits are strftime's (a C call, not a format parse)
        return f"{utc.replace(tzinfo=None).isoformat(timespec='microseconds')}0Z"
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond:06d}0Z"


def preferred_zone(prefer_header: str | None) -> str | None:
    """The zone asked for by `Prefer: outlook.timezone="..."`, validated, or None."""
    if not prefer_header:
        return None
    match = _PREFER_TIMEZONE.search(prefer_header)
    if match is None:
        return None
    resolve_zone(match.group(1))
    return match.group(1)
