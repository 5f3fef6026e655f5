"""Making one Teams meeting in an advisor's calendar, safely repeatable from any point.

1. Look the advisor's events up by the creation key: a create whose answer was lost (the
   process killed mid-call, a "committed then 504") is found here, not made twice.
2. Create the event with `transactionId` = that key, for what the look-up cannot see yet
   (two creates racing, an index Graph updates a little late).
3. No join URL: ask once more for the Teams meeting, then give up (`teams_not_enabled`).
4. Find the onlineMeeting by its join URL (opaque, classic or short `/meet/` form) and PATCH
   its options; Graph answers with the meeting, dial-in details included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from visio_runtime.errors import Transient

from visio_meetings.graph import GraphClient
from visio_meetings.payloads import MeetingSpec
from visio_meetings.refusals import GraphRefused


@dataclass(frozen=True)
class Created:
    graph_event_id: str
    join_url: str
    online_meeting_id: str
    join_meeting_id: str | None
    passcode: str | None
    conference_id: str | None
    dial_in_url: str | None


async def create_meeting(graph: GraphClient, spec: MeetingSpec) -> Created:
    event = await graph.find_event(spec.advisor_id, spec.key)
    if event is None:
        event = await graph.create_event(spec)
    try:
        return await _set_up(graph, spec, event)
    except GraphRefused as refused:
        refused.graph_event_id = event["id"]
        raise


async def _set_up(graph: GraphClient, spec: MeetingSpec, event: dict[str, Any]) -> Created:
    join_url = _join_url(event)
    if join_url is None:
        event = await graph.add_online_meeting(spec.advisor_id, event["id"])
        join_url = _join_url(event)
    if join_url is None:
        raise GraphRefused(
            "NoTeamsMeeting",
            "Graph made the calendar event without a Teams meeting",
            status=422,
            reason="teams_not_enabled",
        )
    meeting = await graph.find_online_meeting(spec.advisor_id, join_url)
    if meeting is None:
        # Graph lists a new meeting a little after the event that created it.
        raise Transient("the Teams meeting is not listed by its join URL yet")
    updated = await graph.update_meeting_options(
        spec.advisor_id, meeting["id"], recording_authorised=spec.recording_authorised
    )
    details = {**meeting, **updated}
    ids = details.get("joinMeetingIdSettings") or {}
    audio = details.get("audioConferencing") or {}
    return Created(
        graph_event_id=event["id"],
        join_url=join_url,
        online_meeting_id=meeting["id"],
        join_meeting_id=ids.get("joinMeetingId"),
        passcode=ids.get("passcode"),
        conference_id=audio.get("conferenceId"),
        dial_in_url=audio.get("dialinUrl"),
    )


def _join_url(event: dict[str, Any]) -> str | None:
    join_url = (event.get("onlineMeeting") or {}).get("joinUrl")
    return join_url if isinstance(join_url, str) and join_url else None
