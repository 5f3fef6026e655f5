"""Graph's front door, the one every call passes, whether it came alone (the app's middleware,
`app.py`) or in a `$batch` (`batch.py`): the call is counted under its endpoint, and in flight
per mailbox (refused past Outlook's concurrency limit, without doing the work); its fault is drawn
and answered before (or, for "commit then 504", after) the handler runs; the configured latency
comes after the work.

`through` is written for any kind of answer (a Starlette response for Entra's token endpoint,
an `Answer` for Graph): the caller says how to run the handler, write a refusal, read a status.
`answer_call` is Graph's: a call's answer from its handler, errors in Graph's shape.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, TypeVar

from visio_fakes.graph_emulator.errors import GraphError, graph_error_body
from visio_fakes.graph_emulator.faults import Outcome
from visio_fakes.graph_emulator.routes import Answer, GraphCall, Handler
from visio_fakes.graph_emulator.state import EmulatorState
from visio_fakes.graph_emulator.subjects import fault_subject

T = TypeVar("T")


class Refusal(NamedTuple):
    """An answer the front door gives instead of the handler's, in Graph's words."""

    status: int
    code: str
    message: str
    headers: dict[str, str]


_FAULTS = {
    429: (
        "TooManyRequests",
        "Too many requests. Retry after the delay given in the Retry-After header.",
    ),
    503: (
        "ServiceUnavailable",
        "The service is temporarily unavailable. Retry after the delay given in the "
        "Retry-After header.",
    ),
    504: ("UnknownError", "The request timed out at the gateway."),
}


def concurrency_refusal(state: EmulatorState) -> Refusal:
    return Refusal(
        429,
        "ApplicationThrottled",
        "Application is over its MailboxConcurrency limit.",
        {"Retry-After": state.faults.retry_after_header()},
    )


def fault_refusal(
    state: EmulatorState, outcome: Outcome, retry_after_seconds: float | None = None
) -> Refusal:
    status = {Outcome.THROTTLE: 429, Outcome.UNAVAILABLE: 503}.get(outcome, 504)
    retry_after = {"Retry-After": state.faults.retry_after_header(retry_after_seconds)}
    code, message = _FAULTS[status]
    return Refusal(status, code, message, retry_after if status in (429, 503) else {})


async def through(
    state: EmulatorState,
    endpoint: str,
    mailbox: str | None,
    *,
    subject: Callable[[], Awaitable[str]],
    handle: Callable[[], Awaitable[T]],
    refuse: Callable[[Refusal], T],
    status_of: Callable[[T], int],
    discard: Callable[[T], Awaitable[None]],
) -> T:
    """The answer to one call of `endpoint` on `mailbox` (None: no mailbox's), past the door.

    `subject` is what its fault is drawn for (asked only when a fault may fall on it), `handle`
    runs its handler, `refuse` writes a refusal, `discard` throws away a handler's answer
    replaced by a timeout.
    """
    stats = state.stats  # the one this call counts in, even if a reset replaces it
    stats.calls[endpoint] += 1
    in_flight = stats.enter(mailbox) if mailbox is not None else 0
    try:
        limit = state.faults.config.mailbox_concurrency_limit
        if mailbox is not None and limit is not None and in_flight > limit:
            # Exchange refuses at once, without doing the work: no latency either.
            stats.concurrency_throttled[mailbox] += 1
            answer = refuse(concurrency_refusal(state))
        else:
            answer = await _answer(state, endpoint, subject, handle, refuse, discard)
    finally:
        if mailbox is not None:
            stats.leave(mailbox)
    stats.responses[endpoint][str(status_of(answer))] += 1
    return answer


async def _answer(
    state: EmulatorState,
    endpoint: str,
    subject: Callable[[], Awaitable[str]],
    handle: Callable[[], Awaitable[T]],
    refuse: Callable[[Refusal], T],
    discard: Callable[[T], Awaitable[None]],
) -> T:
    """The handler's answer, or the fault drawn for this call, after the latency."""
    faults = state.faults
    drawn_for = await subject() if faults.wants_subject(endpoint) else ""
    outcome, retry_after = faults.decide_with_delay(endpoint, drawn_for)
    if outcome in (Outcome.THROTTLE, Outcome.UNAVAILABLE, Outcome.GATEWAY_TIMEOUT):
        answer = refuse(fault_refusal(state, outcome, retry_after))
    else:
        answer = await handle()
        if outcome is Outcome.COMMIT_THEN_TIMEOUT:
            # The handler already changed the state; the client only sees a timeout.
            await discard(answer)
            answer = refuse(fault_refusal(state, Outcome.GATEWAY_TIMEOUT))
    delay = faults.latency_seconds(endpoint)
    if delay:
        # After the work: the change is made whether or not the client waits for the answer.
        await asyncio.sleep(delay)
    return answer


async def answer_call(call: GraphCall, endpoint: str | None, handler: Handler | None) -> Answer:
    """A Graph call's answer past the door: its handler's, or its fault, refusal or error, in
    Graph's shape. `endpoint` None: a path Graph does not serve; `handler` None: not with this
    method."""
    state = call.state
    name = endpoint or "graph.unknown"  # what a path Graph does not serve counts under

    def error(status: int, code: str, message: str, headers: dict[str, str]) -> Answer:
        body = graph_error_body(
            code,
            message,
            now=state.now(),
            request_id=call.request_id,
            client_request_id=call.client_request_id,
        )
        return Answer(status, body, headers)

    async def handle() -> Answer:
        try:
            if handler is None:
                raise _unrouted(call.path, endpoint)
            answer = handler(call)
            return await answer if inspect.isawaitable(answer) else answer
        except GraphError as exc:
            return error(exc.status, exc.code, exc.message, exc.headers)

    async def payload() -> Any:
        try:
            return call.payload()
        except ValueError:
            return None

    user_id = call.params.get("user_id")
    return await through(
        state,
        name,
        user_id.lower() if user_id else None,
        subject=lambda: fault_subject(state, name, call.params, call.query, payload),
        handle=handle,
        refuse=lambda refusal: error(*refusal),
        status_of=lambda answer: answer.status,
        discard=_nothing,
    )


def _unrouted(path: str, endpoint: str | None) -> GraphError:
    """What Graph answers a path it does not serve (400), or a method the path does not take."""
    if endpoint is None:
        segment = path.rstrip("/").rsplit("/", 1)[-1]
        return GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")
    return GraphError(405, "BadRequest", "Method Not Allowed")


async def _nothing(_answer: Answer) -> None:
    return None
