"""Making Teams meetings in advisors' calendars, safely repeatable from any point.

1. Look the advisor's events up by the creation key: a create whose answer was lost (the
   process killed mid-call, a "committed then 504") is found here, not made twice. Not for a
   key the caller knows was never tried (`untried`: marked tried, and committed, before this
   call — store.first_attempts): nothing can have been made under it.
2. Create the event with `transactionId` = that key, for what the look-up cannot see yet
   (two creates racing, an index Graph updates a little late).
3. No join URL: ask once more for the Teams meeting, then give up (`teams_not_enabled`).
4. Find the onlineMeeting by its join URL (opaque, classic or short `/meet/` form) and PATCH
   its options; Graph answers with the meeting, dial-in details included.

`provision_many` takes these steps for many meetings at once, each step in JSON batches
(the look-ups together, then the creates, then…): one meeting's failure is its own outcome,
the others go on. One meeting is a list of one (`create_meeting`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from visio_runtime.errors import Transient

from visio_meetings import calls
from visio_meetings.calls import Call
from visio_meetings.graph import GraphClient, found_event
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
    toll_number: str | None = None
    toll_free_number: str | None = None


async def create_meeting(graph: GraphClient, spec: MeetingSpec) -> Created:
    [outcome] = await provision_many(graph, [spec])
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


async def provision_many(
    graph: GraphClient, specs: Sequence[MeetingSpec], untried: Collection[str] = ()
) -> list[Created | Exception]:
    """Each meeting made (or found made), or why not: `GraphRefused` (for good: with the
    event's id when the event was made), `Transient` (try again later), in `specs`' order.
    Any Graph call may be repeated safely; none is made inside a database transaction by
    this module (the caller holds none while awaiting it). `untried`: creation keys never
    sent to Graph before, whose meetings skip the look-up (step 1)."""
    run = _Provisioning(graph, specs)
    tried = [i for i in range(len(specs)) if specs[i].key not in untried]
    found = await run.step(tried, lambda i: calls.find_event(specs[i].advisor_id, specs[i].key))
    for i, answer in found.items():
        event = found_event(answer, specs[i].key)
        if event is not None:
            run.events[i] = event
    missing = [i for i in range(len(specs)) if i not in run.events and i not in run.outcomes]
    run.events.update(await run.step(missing, lambda i: calls.create_event(specs[i])))
    offline = [i for i, event in run.events.items() if _join_url(event) is None]
    teams = await run.step(
        offline, lambda i: calls.add_online_meeting(specs[i].advisor_id, run.events[i]["id"])
    )
    run.events.update(teams)
    for i in offline:
        if i not in run.outcomes and _join_url(run.events[i]) is None:
            run.fail(i, _no_teams())
    online = [i for i in run.events if i not in run.outcomes]
    listed = await run.step(
        online,
        lambda i: calls.find_online_meeting(specs[i].advisor_id, _join_url(run.events[i]) or ""),
    )
    meetings: dict[int, dict[str, Any]] = {}
    for i, answer in listed.items():
        meeting = calls.first(answer)
        if meeting is None:
            # Graph lists a new meeting a little after the event that created it.
            run.outcomes[i] = Transient("the Teams meeting is not listed by its join URL yet")
        else:
            meetings[i] = meeting
    updated = await run.step(
        meetings,
        lambda i: calls.update_meeting_options(
            specs[i].advisor_id,
            meetings[i]["id"],
            recording_authorised=specs[i].recording_authorised,
        ),
    )
    for i, options in updated.items():
        run.outcomes[i] = _created(run.events[i], {**meetings[i], **options})
    return [run.outcomes[i] for i in range(len(specs))]


class _Provisioning:
    """The meetings being made: each one's event so far, and each settled one's outcome."""

    def __init__(self, graph: GraphClient, specs: Sequence[MeetingSpec]) -> None:
        self.graph = graph
        self.specs = specs
        self.events: dict[int, dict[str, Any]] = {}
        self.outcomes: dict[int, Created | Exception] = {}

    async def step(
        self, indexes: Sequence[int] | dict[int, Any], call: Callable[[int], Call]
    ) -> dict[int, dict[str, Any]]:
        """One step for the meetings `indexes`, in batches: the answers of those it went well
        for; the others are settled with their failure."""
        wanted = [i for i in indexes if i not in self.outcomes]
        if not wanted:
            return {}
        outcomes = await self.graph.batch([call(i) for i in wanted])
        answers = {}
        for i, outcome in zip(wanted, outcomes, strict=True):
            if isinstance(outcome, Exception):
                self.fail(i, outcome)
            else:
                answers[i] = outcome
        return answers

    def fail(self, i: int, failure: Exception) -> None:
        if isinstance(failure, GraphRefused) and i in self.events:
            # Kept so a later cancellation or change of advisor removes that event.
            failure.graph_event_id = self.events[i]["id"]
        self.outcomes[i] = failure


def _no_teams() -> GraphRefused:
    return GraphRefused(
        "NoTeamsMeeting",
        "Graph made the calendar event without a Teams meeting",
        status=422,
        reason="teams_not_enabled",
    )


def _created(event: dict[str, Any], details: dict[str, Any]) -> Created:
    ids = details.get("joinMeetingIdSettings") or {}
    audio = details.get("audioConferencing") or {}
    join_url = _join_url(event)
    assert join_url is not None  # only meetings with one get this far
    return Created(
        graph_event_id=event["id"],
        join_url=join_url,
        online_meeting_id=details["id"],
        join_meeting_id=ids.get("joinMeetingId"),
        passcode=ids.get("passcode"),
        conference_id=audio.get("conferenceId"),
        dial_in_url=audio.get("dialinUrl"),
        toll_number=_first_number(audio, "tollNumbers", "tollNumber"),
        toll_free_number=_first_number(audio, "tollFreeNumbers", "tollFreeNumber"),
    )


def _first_number(audio: dict[str, Any], numbers: str, deprecated: str) -> str | None:
    """The first of a v1.0 numbers list (tollNumbers), or the deprecated single one."""
    listed = [n for n in audio.get(numbers) or [] if isinstance(n, str) and n]
    single = audio.get(deprecated)
    return listed[0] if listed else single if isinstance(single, str) and single else None


def _join_url(event: dict[str, Any]) -> str | None:
    join_url = (event.get("onlineMeeting") or {}).get("joinUrl")
    return join_url if isinstance(join_url, str) and join_url else None
