"""Microsoft Graph, the three calls a meeting needs: create the calendar event with its Teams
meeting, find that meeting by its join URL, set its options.

Failures are classified here, once: throttling, 5xx and network faults are `Transient` (the
shared consumer retries them, honouring Retry-After); a refusal (400, 403, 404, …) is
`GraphRefused`, which the handler turns into `MeetingFailed`.
"""

from __future__ import annotations

import email.utils
import html
import logging
import ssl
import time
import uuid
from datetime import UTC, timedelta
from typing import Any
from urllib.parse import quote

import certifi
import httpx
from visio_runtime.errors import Transient
from visio_shared import AppointmentRequested

from visio_meetings.settings import MeetingsSettings
from visio_meetings.tokens import TokenProvider

log = logging.getLogger(__name__)

# Both derived from the appointment id alone, so every retry of one appointment names the same
# event: Graph returns the event already created for a transactionId instead of a second one.
TRANSACTION_NAMESPACE = uuid.UUID("5227ffaa-4f52-40bd-8199-bb9095993d54")
APPOINTMENT_PROPERTY_ID = "String {eb93a35d-1aac-41ef-9eaa-038cfa09ce2b} Name VisioRdvAppointmentId"

_TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_REFUSAL_REASONS = {400: "bad_request", 403: "forbidden", 404: "not_found", 409: "conflict"}


class GraphRefused(Exception):
    """Graph refused the request for good: retrying the same request cannot help."""

    def __init__(
        self, code: str, message: str, *, status: int = 400, reason: str | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        # A short, stable cause for `MeetingFailed.reason` (`graph_forbidden`, …): Graph's own
        # codes are many and vary by workload, so the precise one goes in the detail.
        self.reason = reason or "graph_" + _REFUSAL_REASONS.get(status, f"refused_{status}")


class GraphUnauthorized(Exception):
    """Graph refused a freshly issued token too: the app registration lacks a permission or
    the token's audience is wrong. Retried, then dead-lettered for ops."""


def transaction_id(appointment_id: uuid.UUID) -> str:
    return str(uuid.uuid5(TRANSACTION_NAMESPACE, str(appointment_id)))


def event_body(appointment: AppointmentRequested) -> dict[str, Any]:
    """The calendar event of one appointment, in the advisor's calendar, mailing nobody."""
    start = appointment.start.astimezone(UTC)
    end = start + timedelta(minutes=appointment.duration_minutes)
    subject = appointment.subject
    return {
        "subject": subject,
        "body": {
            "contentType": "HTML",
            "content": f"<p>{html.escape(subject)}</p><p>Rendez-vous Visio RDV</p>",
        },
        # UTC, not the appointment's IANA zone: Graph accepts only some IANA names on create
        # (its "additional time zones" list lacks Indian/Reunion, for one), UTC always; Outlook
        # shows the event in the advisor's own zone either way.
        "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        "end": {"dateTime": end.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        "isOnlineMeeting": True,
        "onlineMeetingProvider": "teamsForBusiness",
        # No attendees: Graph would mail them; notifications sends our own email.
        "allowNewTimeProposals": False,
        "responseRequested": False,
        "showAs": "busy",
        "transactionId": transaction_id(appointment.appointment_id),
        "singleValueExtendedProperties": [
            {"id": APPOINTMENT_PROPERTY_ID, "value": str(appointment.appointment_id)}
        ],
    }


def meeting_options(*, recording_authorised: bool) -> dict[str, Any]:
    """Lobby for everyone outside the organisation (the public waits to be admitted), the
    advisor alone presents, recording and transcription only with the person's consent."""
    return {
        "lobbyBypassSettings": {"scope": "organization", "isDialInBypassEnabled": False},
        "allowedPresenters": "organizer",
        "allowRecording": recording_authorised,
        "allowTranscription": recording_authorised,
        "recordAutomatically": False,
    }


def join_web_url_filter(join_url: str) -> str:
    """`$filter=JoinWebUrl eq '<url>'`, quoted for OData (a ' doubled) and for the URL (the
    join URL's own %-escapes are escaped again, as Graph's documentation shows)."""
    expression = "JoinWebUrl eq '{}'".format(join_url.replace("'", "''"))
    return "$filter=" + quote(expression, safe="'")


class GraphClient:
    def __init__(self, http: httpx.AsyncClient, tokens: TokenProvider, base_url: str) -> None:
        self._http = http
        self._tokens = tokens
        self._base_url = base_url.rstrip("/")

    @classmethod
    def from_settings(cls, settings: MeetingsSettings) -> GraphClient:
        http = httpx.AsyncClient(
            verify=graph_ssl_context(settings),
            timeout=settings.graph_timeout_s,
            trust_env=False,
            proxy=settings.proxy_url,
            headers={"Accept": "application/json"},
        )
        return cls(http, TokenProvider(settings), settings.graph_base_url)

    async def aclose(self) -> None:
        await self._http.aclose()
        self._tokens.close()

    async def create_event(
        self, advisor_id: str, appointment: AppointmentRequested
    ) -> dict[str, Any]:
        """POST /users/{advisor}/events; a retry with the same transactionId gets the same event."""
        return await self._request(
            "POST", f"/users/{_segment(advisor_id)}/events", json=event_body(appointment)
        )

    async def find_online_meeting(self, advisor_id: str, join_url: str) -> dict[str, Any] | None:
        """The onlineMeeting behind a join URL, or None when Graph does not list it (yet)."""
        answer = await self._request(
            "GET",
            f"/users/{_segment(advisor_id)}/onlineMeetings?{join_web_url_filter(join_url)}",
        )
        meetings = answer.get("value") or []
        return meetings[0] if meetings else None

    async def update_meeting_options(
        self, advisor_id: str, meeting_id: str, *, recording_authorised: bool
    ) -> dict[str, Any]:
        return await self._request(
            "PATCH",
            f"/users/{_segment(advisor_id)}/onlineMeetings/{_segment(meeting_id)}",
            json=meeting_options(recording_authorised=recording_authorised),
        )

    async def _request(
        self, method: str, path: str, *, json: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        url = self._base_url + path
        for attempt in (1, 2):
            token = await self._tokens.token()
            try:
                response = await self._http.request(
                    method, url, json=json, headers={"Authorization": f"Bearer {token}"}
                )
            except httpx.TimeoutException as exc:
                raise Transient(f"Graph {method} timed out: {type(exc).__name__}") from exc
            except httpx.TransportError as exc:
                raise Transient(f"Graph unreachable: {type(exc).__name__}: {exc}") from exc
            if response.status_code == 401:
                # Revoked or expired early: drop it from msal's cache, try once with a new one.
                self._tokens.invalidate(token)
                if attempt == 1:
                    log.info("meetings: Graph answered 401, retrying with a new token")
                    continue
                code, message = _error(response)
                raise GraphUnauthorized(f"Graph {method} 401 {code}: {message}")
            return _answer(method, response)
        raise AssertionError("unreachable")


def graph_ssl_context(settings: MeetingsSettings) -> ssl.SSLContext:
    """httpx wants an SSLContext: the configured bundle, else the public roots (certifi, as
    msal's session uses; not the system store, which SSL_CERT_FILE could redirect)."""
    cafile = settings.ca_bundle if settings.ca_bundle is not None else certifi.where()
    return ssl.create_default_context(cafile=str(cafile))


def _answer(method: str, response: httpx.Response) -> dict[str, Any]:
    status = response.status_code
    if 200 <= status < 300:
        if status == 204 or not response.content:
            return {}
        body = response.json()
        return body if isinstance(body, dict) else {"value": body}
    code, message = _error(response)
    if status in _TRANSIENT_STATUSES:
        raise Transient(
            f"Graph {method} {status} {code}: {message}",
            retry_after=retry_after(response.headers.get("Retry-After")),
        )
    raise GraphRefused(code, message, status=status)


def _error(response: httpx.Response) -> tuple[str, str]:
    """Graph's error body: {"error": {"code": ..., "message": ..., "innerError": {...}}}."""
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    code = str(error.get("code") or response.reason_phrase or response.status_code)
    message = str(error.get("message") or "")[:500]
    return code, message


def retry_after(value: str | None) -> float | None:
    """Retry-After in seconds: delta-seconds, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - time.time())


def _segment(value: str) -> str:
    return quote(value, safe="")
