"""Microsoft Graph, the calls a meeting needs: look an event up by its creation key, create
it with its Teams meeting, move it, cancel it; find the meeting by its join URL, set its
options; after it, read its attendance reports and its recordings' metadata.

Every call goes through `_request`, which decides once what an answer means:
- 2xx: the answer; 401: the token is dropped and the call made once more with a new one;
- 429, 503, 504, 5xx, timeouts, network faults: retried in process a few times (see
  `retries`), then `Transient` for the shared consumer, carrying Graph's Retry-After;
- anything else: `GraphRefused`, which the handlers turn into `MeetingFailed`.
At most `graph_max_concurrent_per_mailbox` requests per advisor are in flight at once
(Outlook throttles a fifth); the others wait their turn while other advisors' calls proceed.
Each call is logged with its `client-request-id` (ours) and Graph's `request-id`, the two
numbers Microsoft support asks for.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote

import certifi
import httpx
from visio_runtime.errors import Transient
from visio_runtime.metrics import Metrics

from visio_meetings.payloads import (
    MeetingSpec,
    event_body,
    event_times,
    join_web_url_filter,
    meeting_key_filter,
    meeting_options,
)
from visio_meetings.refusals import GraphRefused, GraphUnauthorized
from visio_meetings.retries import RetryPolicy, retry_after
from visio_meetings.settings import MeetingsSettings
from visio_meetings.tokens import TokenProvider

log = logging.getLogger(__name__)

_TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
CANCEL_COMMENT = "Rendez-vous Visio RDV annulé."

Sleep = Callable[[float], Awaitable[None]]


class GraphClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        tokens: TokenProvider,
        base_url: str,
        *,
        retry: RetryPolicy | None = None,
        max_per_mailbox: int = 4,
        sleep: Sleep = asyncio.sleep,
        metrics: Metrics | None = None,
    ) -> None:
        metrics = metrics or Metrics("meetings")
        self._calls = metrics.counter(
            "graph_calls_total", "Graph calls by operation and HTTP status (or error).",
            ["operation", "status"],
        )  # fmt: skip
        self._throttled = metrics.counter(
            "graph_throttle_wait_seconds_total",
            "Seconds waited before retrying a throttled (429) Graph call.",
            ["operation"],
        )
        self._http = http
        self._tokens = tokens
        self._base_url = base_url.rstrip("/")
        self._retry = retry or RetryPolicy()
        self._max_per_mailbox = max_per_mailbox
        self._mailboxes: dict[str, asyncio.Semaphore] = {}
        self._sleep = sleep

    @classmethod
    def from_settings(
        cls,
        settings: MeetingsSettings,
        *,
        sleep: Sleep = asyncio.sleep,
        metrics: Metrics | None = None,
    ) -> GraphClient:
        http = httpx.AsyncClient(
            verify=graph_ssl_context(settings),
            timeout=settings.graph_timeout_s,
            trust_env=False,
            proxy=settings.proxy_url,
            headers={"Accept": "application/json"},
            # Enough connections for every mailbox's share; the semaphores do the limiting.
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )
        retry = RetryPolicy(
            attempts=settings.graph_attempts,
            initial_delay_s=settings.graph_backoff_initial_s,
            max_delay_s=settings.graph_backoff_max_s,
            max_in_process_wait_s=settings.graph_max_in_process_wait_s,
        )
        return cls(
            http,
            TokenProvider(settings),
            settings.graph_base_url,
            retry=retry,
            max_per_mailbox=settings.graph_max_concurrent_per_mailbox,
            sleep=sleep,
            metrics=metrics,
        )

    async def check_token(self) -> None:
        """Raises when no token can be obtained (readiness: meetings can do nothing without)."""
        await self._tokens.token()

    async def aclose(self) -> None:
        await self._http.aclose()
        self._tokens.close()

    # --- calendar events ------------------------------------------------------------------

    async def find_event(self, advisor_id: str, key: str) -> dict[str, Any] | None:
        """The advisor's event made under creation key `key`, if any: checked before every
        create, so a create whose answer was lost (crash, timeout) is found, not repeated."""
        answer = await self._request(
            "events.find",
            "GET",
            advisor_id,
            f"/events?{meeting_key_filter(key)}&$select=id,onlineMeeting&$top=2",
        )
        events = answer.get("value") or []
        if len(events) > 1:
            log.warning("meetings: %d events under one creation key %s", len(events), key)
        return events[0] if events else None

    async def create_event(self, spec: MeetingSpec) -> dict[str, Any]:
        """POST /users/{advisor}/events; a retry with the same transactionId gets the same event."""
        return await self._request(
            "events.create", "POST", spec.advisor_id, "/events", json=event_body(spec)
        )

    async def add_online_meeting(self, advisor_id: str, event_id: str) -> dict[str, Any]:
        """Ask again for the Teams meeting of an event that has none (created before the
        advisor's Teams licence, say)."""
        return await self._request(
            "events.update",
            "PATCH",
            advisor_id,
            f"/events/{_segment(event_id)}",
            json={"isOnlineMeeting": True, "onlineMeetingProvider": "teamsForBusiness"},
        )

    async def move_event(
        self, advisor_id: str, event_id: str, start: datetime, duration_minutes: int, timezone: str
    ) -> dict[str, Any]:
        """New start and end; the Teams meeting and its join URL stay the same."""
        return await self._request(
            "events.update",
            "PATCH",
            advisor_id,
            f"/events/{_segment(event_id)}",
            json=event_times(start, duration_minutes, timezone),
        )

    async def cancel_event(self, advisor_id: str, event_id: str) -> bool:
        """The organiser cancels the event (and its Teams meeting); False when it was gone
        already (cancelled before, deleted in Outlook, mailbox removed): done all the same."""
        try:
            await self._request(
                "events.cancel",
                "POST",
                advisor_id,
                f"/events/{_segment(event_id)}/cancel",
                json={"Comment": CANCEL_COMMENT},
            )
        except GraphRefused as refused:
            if refused.status == 404:
                return False
            raise
        return True

    # --- Teams meetings -------------------------------------------------------------------

    async def find_online_meeting(self, advisor_id: str, join_url: str) -> dict[str, Any] | None:
        """The onlineMeeting behind a join URL, or None when Graph does not list it (yet)."""
        answer = await self._request(
            "onlineMeetings.find",
            "GET",
            advisor_id,
            f"/onlineMeetings?{join_web_url_filter(join_url)}",
        )
        meetings = answer.get("value") or []
        return meetings[0] if meetings else None

    async def update_meeting_options(
        self, advisor_id: str, meeting_id: str, *, recording_authorised: bool
    ) -> dict[str, Any]:
        """PATCH the options; Graph answers with the whole onlineMeeting."""
        return await self._request(
            "onlineMeetings.update",
            "PATCH",
            advisor_id,
            f"/onlineMeetings/{_segment(meeting_id)}",
            json=meeting_options(recording_authorised=recording_authorised),
        )

    # --- after the meeting: its artifacts (OnlineMeetingArtifact / OnlineMeetingRecording) -----

    async def attendance_reports(self, advisor_id: str, meeting_id: str) -> list[dict[str, Any]]:
        """The meeting's attendance reports (one per session), without their records; empty
        until Teams has made them, some minutes after the meeting ends."""
        answer = await self._request(
            "attendanceReports.list",
            "GET",
            advisor_id,
            f"/onlineMeetings/{_segment(meeting_id)}/attendanceReports",
        )
        return list(answer.get("value") or [])

    async def attendance_report(
        self, advisor_id: str, meeting_id: str, report_id: str
    ) -> dict[str, Any]:
        """One report with its attendanceRecords (who, role, intervals)."""
        return await self._request(
            "attendanceReports.get",
            "GET",
            advisor_id,
            f"/onlineMeetings/{_segment(meeting_id)}/attendanceReports/{_segment(report_id)}"
            "?$expand=attendanceRecords",
        )

    async def recordings(self, advisor_id: str, meeting_id: str) -> list[dict[str, Any]]:
        """The meeting's recordings' metadata; their content is never fetched."""
        answer = await self._request(
            "recordings.list",
            "GET",
            advisor_id,
            f"/onlineMeetings/{_segment(meeting_id)}/recordings",
        )
        return list(answer.get("value") or [])

    # --- one request, whatever Graph does -------------------------------------------------

    async def _request(
        self,
        operation: str,
        method: str,
        advisor_id: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        url = f"{self._base_url}/users/{_segment(advisor_id)}{path}"
        attempt = 0
        renewed_token = False
        while True:
            attempt += 1
            throttled = False
            token = await self._tokens.token()
            try:
                response = await self._send(operation, method, url, advisor_id, token, json)
            except httpx.TimeoutException as exc:
                failure = Transient(f"Graph {operation} timed out: {type(exc).__name__}")
            except httpx.TransportError as exc:
                failure = Transient(f"Graph unreachable: {type(exc).__name__}: {exc}")
            else:
                status = response.status_code
                if status == 401:
                    # Revoked or expired early: drop it from msal's cache, try once with a new one.
                    self._tokens.invalidate(token)
                    if not renewed_token:
                        renewed_token, attempt = True, attempt - 1
                        continue
                    code, message = _error(response)
                    raise GraphUnauthorized(f"Graph {operation} 401 {code}: {message}")
                if status not in _TRANSIENT_STATUSES:
                    return _answer(response)
                code, message = _error(response)
                throttled = status == 429
                failure = Transient(
                    f"Graph {operation} {status} {code}: {message} "
                    f"(request-id {response.headers.get('request-id')})",
                    retry_after=retry_after(response.headers.get("Retry-After")),
                )
            wait = self._retry.wait_before_next(attempt, failure.retry_after)
            if wait is None:
                raise failure
            log.info("meetings: %s; attempt %d, next in %.2fs", failure, attempt, wait)
            if throttled:
                self._throttled.labels(operation).inc(wait)
            await self._sleep(wait)

    async def _send(
        self,
        operation: str,
        method: str,
        url: str,
        advisor_id: str,
        token: str,
        json: dict[str, Any] | None,
    ) -> httpx.Response:
        client_request_id = str(uuid.uuid4())
        headers = {
            "Authorization": f"Bearer {token}",
            "client-request-id": client_request_id,
            "return-client-request-id": "true",
        }
        async with self._mailbox(advisor_id):
            started = time.monotonic()
            try:
                response = await self._http.request(method, url, json=json, headers=headers)
            except httpx.HTTPError as exc:
                self._calls.labels(operation, type(exc).__name__).inc()
                log.warning(
                    "graph %s: %s after %.0f ms (client-request-id %s)",
                    operation,
                    type(exc).__name__,
                    (time.monotonic() - started) * 1000,
                    client_request_id,
                )
                raise
        self._calls.labels(operation, str(response.status_code)).inc()
        log.info(
            "graph %s: %d in %.0f ms (client-request-id %s, request-id %s)",
            operation,
            response.status_code,
            (time.monotonic() - started) * 1000,
            client_request_id,
            response.headers.get("request-id"),
        )
        return response

    def _mailbox(self, advisor_id: str) -> asyncio.Semaphore:
        key = advisor_id.lower()
        semaphore = self._mailboxes.get(key)
        if semaphore is None:
            semaphore = self._mailboxes[key] = asyncio.Semaphore(self._max_per_mailbox)
        return semaphore


def graph_ssl_context(settings: MeetingsSettings) -> ssl.SSLContext:
    """httpx wants an SSLContext: the configured bundle, else the public roots (certifi, as
    msal's session uses; not the system store, which SSL_CERT_FILE could redirect)."""
    cafile = settings.ca_bundle if settings.ca_bundle is not None else certifi.where()
    return ssl.create_default_context(cafile=str(cafile))


def _answer(response: httpx.Response) -> dict[str, Any]:
    if response.is_success:
        if response.status_code in (202, 204) or not response.content:
            return {}
        body = response.json()
        return body if isinstance(body, dict) else {"value": body}
    code, message = _error(response)
    raise GraphRefused(
        code, message, status=response.status_code, request_id=response.headers.get("request-id")
    )


def _error(response: httpx.Response) -> tuple[str, str]:
    """Graph's error body: {"error": {"code": ..., "message": ..., "innerError": {...}}}."""
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    code = str(error.get("code") or response.reason_phrase or response.status_code)
    message = str(error.get("message") or "")[:500]
    return code, message


def _segment(value: str) -> str:
    return quote(value, safe="")
