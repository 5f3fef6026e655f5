"""Microsoft Graph, the calls a meeting needs: look an event up by its creation key, create
it with its Teams meeting, move it, cancel it; find the meeting by its join URL, set its
options; after it, read its attendance reports and its recordings' metadata.

Requests go alone (`call`) or many in JSON batches (`batch`: `POST /$batch`, at most 20 a
batch), and either way one loop (`_settle`) decides what each answer means:
- 2xx: the answer; 401: the token is dropped and the request made once more with a new one;
- 429, 503, 504, 5xx, timeouts, network faults: retried in process a few times (see
  `retries`), each request after its own Retry-After (a throttled request of a batch does
  not hold back its neighbours, nor go before its time), then `Transient` for the shared
  consumer, carrying Graph's Retry-After;
- anything else: `GraphRefused`, which the handlers turn into `MeetingFailed`.
A batch only saves our requests (TLS records, headers, JSON envelopes: our CPU): Outlook runs
at most 4 requests of a batch at a time, so it takes Graph as long as the requests alone
would. No `dependsOn`: a batch holds the same step of many appointments, never two steps of
one (dependsOn only orders; a request cannot use another's answer).
At most `graph_max_concurrent_per_mailbox` requests per advisor are in flight at once, batched
or not (Outlook throttles a fifth); the others wait their turn while other advisors' proceed.
One HTTP client keeps its connections alive and reuses them. Each request (each batch) is
logged with its `client-request-id` (ours) and Graph's `request-id`, the two numbers
Microsoft support asks for.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime
from typing import Any

import httpx
from pydantic_core import to_json
from visio_runtime import http_network
from visio_runtime.errors import Transient
from visio_runtime.metrics import Metrics

from visio_meetings import calls
from visio_meetings.calls import TRANSIENT_STATUSES, Call, Reply, segment
from visio_meetings.graph_batches import shape
from visio_meetings.graph_http import (
    batch_replies,
    graph_ssl_context,
    reply_of,
    transient,
    unreachable,
)
from visio_meetings.payloads import MeetingSpec
from visio_meetings.refusals import GraphRefused, GraphUnauthorized
from visio_meetings.retries import RetryPolicy
from visio_meetings.settings import MeetingsSettings
from visio_meetings.tokens import TokenProvider

log = logging.getLogger(__name__)


Sleep = Callable[[float], Awaitable[None]]
# What became of one request: its answer, or why there is none (Transient, GraphRefused,
# GraphUnauthorized).
Outcome = dict[str, Any] | Exception
Send = Callable[[Sequence[Call], str], Awaitable[list[Reply | Transient]]]


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
        self._batches = metrics.counter(
            "graph_batches_total", "Graph $batch requests by HTTP status (or error).", ["status"]
        )
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
        # One batch at a time gathers a mailbox's permits (see `_holding`).
        self._gathering: dict[str, asyncio.Lock] = {}
        self._sleep = sleep

    @classmethod
    def from_settings(
        cls,
        settings: MeetingsSettings,
        *,
        sleep: Sleep = asyncio.sleep,
        metrics: Metrics | None = None,
    ) -> GraphClient:
        # On the loop's own transports (visio_runtime.http_network: anyio was a fifth of
        # meetings' CPU). Every connection opened is kept for the next request: a new one
        # costs a TCP and TLS handshake, more than the request itself. The semaphores do the
        # limiting.
        transport = http_network.transport(
            verify=graph_ssl_context(settings),
            trust_env=False,
            proxy=settings.proxy_url,
            limits=httpx.Limits(
                max_connections=settings.graph_max_connections,
                max_keepalive_connections=settings.graph_max_connections,
                keepalive_expiry=60,
            ),
        )
        http = httpx.AsyncClient(
            transport=transport,
            timeout=settings.graph_timeout_s,
            trust_env=False,
            headers={"Accept": "application/json"},
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
        return found_event(await self.call(calls.find_event(advisor_id, key)), key)

    async def create_event(self, spec: MeetingSpec) -> dict[str, Any]:
        """POST /users/{advisor}/events; a retry with the same transactionId gets the same event."""
        return await self.call(calls.create_event(spec))

    async def add_online_meeting(self, advisor_id: str, event_id: str) -> dict[str, Any]:
        """Ask again for the Teams meeting of an event that has none (created before the
        advisor's Teams licence, say)."""
        return await self.call(calls.add_online_meeting(advisor_id, event_id))

    async def move_event(
        self, advisor_id: str, event_id: str, start: datetime, duration_minutes: int, timezone: str
    ) -> dict[str, Any]:
        """New start and end; the Teams meeting and its join URL stay the same."""
        return await self.call(
            calls.move_event(advisor_id, event_id, start, duration_minutes, timezone)
        )

    async def cancel_event(self, advisor_id: str, event_id: str) -> bool:
        """The organiser cancels the event (and its Teams meeting); False when it was gone
        already (cancelled before, deleted in Outlook, mailbox removed): done all the same."""
        try:
            await self.call(calls.cancel_event(advisor_id, event_id))
        except GraphRefused as refused:
            if refused.status == 404:
                return False
            raise
        return True

    # --- Teams meetings -------------------------------------------------------------------

    async def find_online_meeting(self, advisor_id: str, join_url: str) -> dict[str, Any] | None:
        """The onlineMeeting behind a join URL, or None when Graph does not list it (yet)."""
        return calls.first(await self.call(calls.find_online_meeting(advisor_id, join_url)))

    async def update_meeting_options(
        self, advisor_id: str, meeting_id: str, *, recording_authorised: bool
    ) -> dict[str, Any]:
        """PATCH the options; Graph answers with the whole onlineMeeting."""
        return await self.call(
            calls.update_meeting_options(
                advisor_id, meeting_id, recording_authorised=recording_authorised
            )
        )

    # --- after the meeting: its artifacts (OnlineMeetingArtifact / OnlineMeetingRecording) -----

    async def attendance_reports(self, advisor_id: str, meeting_id: str) -> list[dict[str, Any]]:
        """The meeting's attendance reports (one per session), without their records; empty
        until Teams has made them, some minutes after the meeting ends."""
        path = f"/onlineMeetings/{segment(meeting_id)}/attendanceReports"
        answer = await self.call(Call("attendanceReports.list", "GET", advisor_id, path))
        return list(answer.get("value") or [])

    async def attendance_report(
        self, advisor_id: str, meeting_id: str, report_id: str
    ) -> dict[str, Any]:
        """One report with its attendanceRecords (who, role, intervals)."""
        path = (
            f"/onlineMeetings/{segment(meeting_id)}/attendanceReports/{segment(report_id)}"
            "?$expand=attendanceRecords"
        )
        return await self.call(Call("attendanceReports.get", "GET", advisor_id, path))

    async def recordings(self, advisor_id: str, meeting_id: str) -> list[dict[str, Any]]:
        """The meeting's recordings' metadata; their content is never fetched."""
        path = f"/onlineMeetings/{segment(meeting_id)}/recordings"
        answer = await self.call(Call("recordings.list", "GET", advisor_id, path))
        return list(answer.get("value") or [])

    # --- requests, whatever Graph does ----------------------------------------------------

    async def call(self, call: Call) -> dict[str, Any]:
        """One request on its own; raises what became of it if it has no answer."""
        [outcome] = await self._settle([call], self._send_each)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def batch(self, batched: Sequence[Call]) -> list[Outcome]:
        """Many requests in JSON batches; what became of each, in the order given.

        A failure is one request's (its own 429, 503, refusal): the others have their answers.
        """
        return await self._settle(batched, self._send_batches)

    async def _settle(self, requests: Sequence[Call], send: Send) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(requests)
        attempts = [0] * len(requests)
        renewed = [False] * len(requests)
        # Seconds each unsettled request still waits before it goes (again).
        waiting = dict.fromkeys(range(len(requests)), 0.0)
        while waiting:
            pause = min(waiting.values())
            if pause > 0:
                await self._sleep(pause)
                waiting = {i: wait - pause for i, wait in waiting.items()}
            ready = [i for i, wait in waiting.items() if wait <= 1e-9]
            for i in ready:
                del waiting[i]
            token = await self._tokens.token()
            replies = await send([requests[i] for i in ready], token)
            for i, reply in zip(ready, replies, strict=True):
                operation = requests[i].operation
                if isinstance(reply, Reply) and reply.status == 401:
                    # Revoked or expired early: drop it from msal's cache, once more with a new one.
                    self._tokens.invalidate(token)
                    if not renewed[i]:
                        renewed[i], waiting[i] = True, 0.0
                        continue
                    code, message = reply.error()
                    outcomes[i] = GraphUnauthorized(f"Graph {operation} 401 {code}: {message}")
                    continue
                if isinstance(reply, Reply) and reply.status not in TRANSIENT_STATUSES:
                    try:
                        outcomes[i] = reply.answer()
                    except GraphRefused as refused:
                        outcomes[i] = refused
                    continue
                failure = reply if isinstance(reply, Transient) else transient(operation, reply)
                attempts[i] += 1
                wait = self._retry.wait_before_next(attempts[i], failure.retry_after)
                if wait is None:
                    outcomes[i] = failure
                    continue
                log.info("meetings: %s; attempt %d, next in %.2fs", failure, attempts[i], wait)
                if isinstance(reply, Reply) and reply.status == 429:
                    self._throttled.labels(operation).inc(wait)
                waiting[i] = wait
        return [outcome for outcome in outcomes if outcome is not None]

    async def _send_each(self, requests: Sequence[Call], token: str) -> list[Reply | Transient]:
        return list(await asyncio.gather(*(self._send(call, token) for call in requests)))

    async def _send(self, call: Call, token: str) -> Reply | Transient:
        client_request_id = str(uuid.uuid4())
        headers = {
            "Authorization": f"Bearer {token}",
            "client-request-id": client_request_id,
            "return-client-request-id": "true",
        }
        url = f"{self._base_url}{call.relative_url}"
        async with self._mailbox(call.advisor_id):
            started = time.monotonic()
            try:
                response = await self._http.request(
                    call.method, url, json=call.json, headers=headers
                )
            except httpx.HTTPError as exc:
                self._calls.labels(call.operation, type(exc).__name__).inc()
                log.warning(
                    "graph %s: %s after %.0f ms (client-request-id %s)",
                    call.operation,
                    type(exc).__name__,
                    (time.monotonic() - started) * 1000,
                    client_request_id,
                )
                return unreachable(call.operation, exc)
        self._calls.labels(call.operation, str(response.status_code)).inc()
        log.info(
            "graph %s: %d in %.0f ms (client-request-id %s, request-id %s)",
            call.operation,
            response.status_code,
            (time.monotonic() - started) * 1000,
            client_request_id,
            response.headers.get("request-id"),
        )
        return reply_of(response)

    async def _send_batches(self, requests: Sequence[Call], token: str) -> list[Reply | Transient]:
        """The requests in as few batches as the limits allow, sent side by side."""
        replies: list[Reply | Transient | None] = [None] * len(requests)

        async def send(indexes: list[int]) -> None:
            answers = await self._send_batch([requests[i] for i in indexes], token)
            for i, answer in zip(indexes, answers, strict=True):
                replies[i] = answer

        await asyncio.gather(*(send(chunk) for chunk in shape(requests, self._max_per_mailbox)))
        return [reply for reply in replies if reply is not None]

    async def _send_batch(self, requests: Sequence[Call], token: str) -> list[Reply | Transient]:
        client_request_id = str(uuid.uuid4())
        body = {
            "requests": [
                {
                    "id": str(i),
                    "method": call.method,
                    "url": call.relative_url,
                    **(
                        {"headers": {"Content-Type": "application/json"}, "body": call.json}
                        if call.json is not None
                        else {}
                    ),
                }
                for i, call in enumerate(requests)
            ]
        }
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "client-request-id": client_request_id,
            "return-client-request-id": "true",
        }
        async with self._holding(Counter(call.advisor_id.lower() for call in requests)):
            started = time.monotonic()
            try:
                # The bytes httpx's `json=` writes (compact, UTF-8), by pydantic-core.
                response = await self._http.post(
                    f"{self._base_url}/$batch", content=to_json(body), headers=headers
                )
            except httpx.HTTPError as exc:
                self._batches.labels(type(exc).__name__).inc()
                log.warning(
                    "graph batch of %d: %s after %.0f ms (client-request-id %s)",
                    len(requests),
                    type(exc).__name__,
                    (time.monotonic() - started) * 1000,
                    client_request_id,
                )
                return [unreachable("batch", exc)] * len(requests)
        self._batches.labels(str(response.status_code)).inc()
        replies = batch_replies(response, len(requests))
        for call, reply in zip(requests, replies, strict=True):
            self._calls.labels(call.operation, str(reply.status)).inc()
        log.info(
            "graph batch of %d: %d in %.0f ms, %s (client-request-id %s, request-id %s)",
            len(requests),
            response.status_code,
            (time.monotonic() - started) * 1000,
            dict(Counter(reply.status for reply in replies)),
            client_request_id,
            response.headers.get("request-id"),
        )
        return list(replies)

    def _mailbox(self, advisor_id: str) -> asyncio.Semaphore:
        key = advisor_id.lower()
        semaphore = self._mailboxes.get(key)
        if semaphore is None:
            semaphore = self._mailboxes[key] = asyncio.Semaphore(self._max_per_mailbox)
        return semaphore

    @asynccontextmanager
    async def _holding(self, per_mailbox: Counter[str]) -> AsyncIterator[None]:
        """A batch's share of each of its mailboxes' requests in flight.

        Mailboxes in one order, and one batch at a time gathering a mailbox's permits: two
        batches each holding part of what both need would wait for each other for ever.
        """
        async with AsyncExitStack() as stack:
            for mailbox in sorted(per_mailbox):
                semaphore = self._mailbox(mailbox)
                gathering = self._gathering.setdefault(mailbox, asyncio.Lock())
                async with gathering:
                    for _ in range(per_mailbox[mailbox]):
                        await semaphore.acquire()
                        stack.callback(semaphore.release)
            yield


def found_event(answer: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The event a look-up by creation key found (two under one key is logged: never expected)."""
    events = answer.get("value") or []
    if len(events) > 1:
        log.warning("meetings: %d events under one creation key %s", len(events), key)
    return calls.first(answer)
