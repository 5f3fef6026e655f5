"""Which appointment a Graph call is about, so that its fault is drawn from (seed, appointment,
operation, attempt) and a seed replays it whatever the order of arrival
(`visio_fakes.fault_draws`).

A call names its appointment directly (the extended property of a new event) or through what
the emulator holds: an event or its Teams meeting carries the appointment's id. A call that
names none of these is about the most specific thing it names: the creation key a look-up
filters on (derived from the appointment alone), the join URL, the mailbox.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from visio_fakes.graph_emulator.state import EmulatorState, StoredEvent

# The literal of a `… eq '<value>'` OData filter, the last one (a key or a join URL).
_LAST_LITERAL = re.compile(r"eq\s+'((?:[^']|'')*)'\s*\)?\s*$")


async def fault_subject(
    state: EmulatorState,
    endpoint: str,
    path_params: Mapping[str, Any],
    query: Mapping[str, str],
    payload: Callable[[], Awaitable[Any]],
) -> str:
    """The subject of one call: `payload` gives its body's JSON value (None if not JSON)."""
    event_id = path_params.get("event_id")
    if isinstance(event_id, str) and (event := state.events.get(event_id)) is not None:
        return _of_event(state, event)
    meeting_id = path_params.get("meeting_id")
    if isinstance(meeting_id, str) and (meeting := state.meetings.get(meeting_id)) is not None:
        if (event := state.events.get(meeting.event_id)) is not None:
            return _of_event(state, event)
        return meeting.id
    if endpoint == "graph.events.create":
        return _of_new_event(state, await payload()) or _mailbox(path_params)
    found = _LAST_LITERAL.search(query.get("$filter") or query.get("filter") or "")
    if found is not None:
        wanted = found.group(1).replace("''", "'")
        meeting = state.live_meeting_by_join_url(wanted)
        if meeting is not None and (event := state.events.get(meeting.event_id)) is not None:
            return _of_event(state, event)
        return wanted
    return _mailbox(path_params)


def _of_event(state: EmulatorState, event: StoredEvent) -> str:
    return state.external_id_of(event) or event.transaction_id or event.id


def _of_new_event(state: EmulatorState, payload: Any) -> str | None:
    if not isinstance(payload, dict):
        return None
    suffix = f" name {state.settings.external_id_property_name}".lower()
    for prop in payload.get("singleValueExtendedProperties") or []:
        if isinstance(prop, dict) and str(prop.get("id", "")).lower().endswith(suffix):
            return str(prop.get("value"))
    transaction = payload.get("transactionId")
    return str(transaction) if transaction else None


def _mailbox(path_params: Mapping[str, Any]) -> str:
    return str(path_params.get("user_id", "")).lower()
