"""No text message between 20:00 and 08:00 in the person's own time zone (the appointment's,
overseas included), with two exceptions that matter more than sleep:

- the reminder of an appointment due within the next two hours (`urgent_minutes`): it is the
  one that gets the person there;
- a change or cancellation notice of an appointment within the next hours
  (`urgent_change_minutes`): coming for nothing, or missing the new time, is worse.

A reminder that would fall in the quiet hours goes *earlier*, at the last hour before them
(19:00 the evening before): later would be too close to the appointment, or after it. If that
hour has already passed, it goes when the quiet hours end, if that is still before the start.
Every other text (a confirmation, a change far off) waits for the end of the quiet hours.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo


def in_quiet_hours(moment: datetime, zone: ZoneInfo, start_hour: int, end_hour: int) -> bool:
    hour = moment.astimezone(zone).hour
    return hour >= start_hour or hour < end_hour


def _at(day: datetime, hour: int, zone: ZoneInfo) -> datetime:
    return datetime.combine(day.date(), time(hour), tzinfo=zone)


def quiet_end(moment: datetime, zone: ZoneInfo, start_hour: int, end_hour: int) -> datetime:
    """When the quiet hours `moment` falls in end (it must fall in them)."""
    local = moment.astimezone(zone)
    day = local if local.hour < end_hour else local + timedelta(days=1)
    return _at(day, end_hour, zone)


def last_hour_before(moment: datetime, zone: ZoneInfo, start_hour: int, end_hour: int) -> datetime:
    """The start of the last hour before the quiet hours `moment` falls in."""
    local = moment.astimezone(zone)
    day = local if local.hour >= start_hour else local - timedelta(days=1)
    return _at(day, start_hour, zone) - timedelta(hours=1)


def release_at(
    kind: str,
    planned: datetime,
    start: datetime,
    now: datetime,
    zone: ZoneInfo,
    *,
    start_hour: int = 20,
    end_hour: int = 8,
    urgent_minutes: int = 120,
    urgent_change_minutes: int = 12 * 60,
) -> datetime:
    """When a text planned for `planned` may go, for an appointment starting at `start`."""
    planned = max(planned, now)
    if not in_quiet_hours(planned, zone, start_hour, end_hour):
        return planned
    until_start = start - planned
    if kind == "reminder":
        if until_start <= timedelta(minutes=urgent_minutes):
            return planned
        earlier = last_hour_before(planned, zone, start_hour, end_hour)
        if earlier >= now:
            return earlier
    elif kind != "confirmation" and until_start <= timedelta(minutes=urgent_change_minutes):
        return planned
    after = quiet_end(planned, zone, start_hour, end_hour)
    return after if after < start or kind == "cancellation" else planned
