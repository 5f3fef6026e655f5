"""Graph's refusals, named for the operator who has to fix them.

A refusal (400, 403, 404, …) will not go away by retrying the same request: it becomes a
`MeetingFailed` whose `reason` is short and stable, and whose `detail` says what to do and
what Graph said (its own codes are many and vary by workload).
"""

from __future__ import annotations

# What an operator does about each reason; the detail of MeetingFailed starts with it.
HINTS = {
    "teams_not_enabled": "the advisor's mailbox has no Teams: assign a Teams licence (or "
    "reassign the appointment), then replay",
    "access_policy_missing": "the advisor is outside the application's access policy: add "
    "the mailbox to the Exchange application access policy (calendar) and to the Teams "
    "application access policy (Grant-CsApplicationAccessPolicy), then replay",
    "permission_missing": "the app registration lacks an application permission "
    "(Calendars.ReadWrite, OnlineMeetings.ReadWrite.All; after the meeting "
    "OnlineMeetingArtifact.Read.All, OnlineMeetingRecording.Read.All) or its admin consent",
    "advisor_not_found": "no such user or mailbox in the tenant: check the advisor's Entra "
    "object id, or reassign the appointment",
    "event_not_found": "the calendar event is gone (deleted in Outlook?): reassign the "
    "appointment to create a new meeting",
    "meeting_not_found": "the Teams meeting is gone: reassign the appointment to create a "
    "new meeting",
    "graph_bad_request": "Graph refused the request as invalid: report it with the "
    "request-id from the meetings log",
}

_ADVISOR_UNKNOWN_CODES = frozenset(
    {
        "ErrorInvalidUser",
        "ResourceNotFound",
        "MailboxNotEnabledForRESTAPI",
        "Request_ResourceNotFound",
    }
)


class GraphRefused(Exception):
    """Graph refused the request for good: retrying the same request cannot help."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int = 400,
        reason: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.request_id = request_id  # Graph's, for Microsoft support
        self.reason = reason or refusal_reason(status, code, message)
        # Set when the refusal came after the calendar event was made (Teams, options):
        # kept so a later cancellation or change of advisor removes that event.
        self.graph_event_id: str | None = None

    @property
    def detail(self) -> str:
        """What to do, then what Graph said."""
        said = f"Graph {self.status} {self.code}: {self.message}"
        if self.request_id:
            said += f" (request-id {self.request_id})"
        hint = HINTS.get(self.reason)
        return (f"{hint}. {said}" if hint else said)[:1000]


class GraphUnauthorized(Exception):
    """Graph refused a freshly issued token too: the app registration lacks a permission or
    the token's audience is wrong. Retried, then dead-lettered for ops."""


def refusal_reason(status: int, code: str, message: str) -> str:
    text = f"{code} {message}".lower()
    if status == 403:
        if "accesspolicy" in text or "access policy" in text:
            return "access_policy_missing"
        return "permission_missing"
    if status == 404:
        if code in _ADVISOR_UNKNOWN_CODES or "user" in text:
            return "advisor_not_found"
        if code == "ErrorItemNotFound":
            return "event_not_found"
        if "online meeting" in text:
            return "meeting_not_found"
    if status == 400:
        return "graph_bad_request"
    return f"graph_refused_{status}"
