"""The Graph requests meetings makes, as values: what to send (`Call`), and what an answer
means (`Reply`, `outcome`). Sent alone (`GraphClient.call`) or many in one `$batch`
(`GraphClient.batch`), a request is the same value and its answer is read the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

from visio_meetings.payloads import (
    MeetingSpec,
    event_body,
    event_times,
    join_web_url_filter,
    meeting_key_filter,
    meeting_options,
)
from visio_meetings.refusals import GraphRefused

TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
CANCEL_COMMENT = "Rendez-vous Visio RDV annulé."
ERASED_SUBJECT = "Rendez-vous Visio RDV (données personnelles effacées)"


@dataclass(frozen=True)
class Call:
    """One request about one advisor's mailbox: `path` follows `/users/{advisor}`."""

    operation: str  # what logs and metrics call it: events.find, events.create…
    method: str
    advisor_id: str
    path: str
    json: dict[str, Any] | None = None

    @property
    def relative_url(self) -> str:
        """The URL after the version, as a batch names it."""
        return f"/users/{segment(self.advisor_id)}{self.path}"

    @property
    def outlook(self) -> bool:
        """A request Outlook serves (the mailbox's events and calendar), not Teams."""
        return self.path.startswith(("/events", "/calendar"))


@dataclass(frozen=True)
class Reply:
    """An answer from Graph, alone or inside a batch: status, headers (lower-case), body."""

    status: int
    headers: dict[str, str]
    body: Any

    def error(self) -> tuple[str, str]:
        """Graph's error body: {"error": {"code": ..., "message": ..., "innerError": {...}}}."""
        error = self.body.get("error") if isinstance(self.body, dict) else None
        error = error if isinstance(error, dict) else {}
        code = str(error.get("code") or _phrase(self.status))
        message = str(error.get("message") or "")[:500]
        return code, message

    def answer(self) -> dict[str, Any]:
        """A success's body (empty for 202/204); any other status raises `GraphRefused`."""
        if 200 <= self.status < 300:
            if self.status in (202, 204) or not self.body:
                return {}
            return self.body if isinstance(self.body, dict) else {"value": self.body}
        code, message = self.error()
        raise GraphRefused(
            code, message, status=self.status, request_id=self.headers.get("request-id")
        )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return str(status)


def segment(value: str) -> str:
    return quote(value, safe="")


# --- the calls -------------------------------------------------------------------------------


def find_event(advisor_id: str, key: str) -> Call:
    """The advisor's events made under creation key `key` (see `first`)."""
    path = f"/events?{meeting_key_filter(key)}&$select=id,onlineMeeting&$top=2"
    return Call("events.find", "GET", advisor_id, path)


def create_event(spec: MeetingSpec) -> Call:
    return Call("events.create", "POST", spec.advisor_id, "/events", event_body(spec))


def add_online_meeting(advisor_id: str, event_id: str) -> Call:
    body = {"isOnlineMeeting": True, "onlineMeetingProvider": "teamsForBusiness"}
    return Call("events.update", "PATCH", advisor_id, f"/events/{segment(event_id)}", body)


def move_event(
    advisor_id: str, event_id: str, start: Any, duration_minutes: int, timezone: str
) -> Call:
    body = event_times(start, duration_minutes, timezone)
    return Call("events.update", "PATCH", advisor_id, f"/events/{segment(event_id)}", body)


def get_event_body(advisor_id: str, event_id: str) -> Call:
    """The event's body as Graph holds it (HTML, the Teams block included)."""
    path = f"/events/{segment(event_id)}?$select=body"
    return Call("events.get", "GET", advisor_id, path)


def rewrite_event_body(
    advisor_id: str, event_id: str, content: str, *, subject: str | None = None
) -> Call:
    """The event's body (and subject), nothing else: no attendees, so Graph mails no one."""
    body: dict[str, Any] = {"body": {"contentType": "HTML", "content": content}}
    if subject is not None:
        body["subject"] = subject
    return Call("events.update", "PATCH", advisor_id, f"/events/{segment(event_id)}", body)


def cancel_event(advisor_id: str, event_id: str) -> Call:
    path = f"/events/{segment(event_id)}/cancel"
    return Call("events.cancel", "POST", advisor_id, path, {"Comment": CANCEL_COMMENT})


def find_online_meeting(advisor_id: str, join_url: str) -> Call:
    """The onlineMeeting behind a join URL (see `first`)."""
    path = f"/onlineMeetings?{join_web_url_filter(join_url)}"
    return Call("onlineMeetings.find", "GET", advisor_id, path)


def update_meeting_options(advisor_id: str, meeting_id: str, *, recording_authorised: bool) -> Call:
    body = meeting_options(recording_authorised=recording_authorised)
    path = f"/onlineMeetings/{segment(meeting_id)}"
    return Call("onlineMeetings.update", "PATCH", advisor_id, path, body)


def first(answer: dict[str, Any]) -> dict[str, Any] | None:
    """The first item of a list answer, if any."""
    found = answer.get("value") or []
    return found[0] if found else None
