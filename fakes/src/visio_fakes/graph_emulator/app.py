"""The emulator's FastAPI application: Entra ID + Graph routes, transport behaviour, control API.

The HTTP middleware plays the part of Graph's front door: it stamps `request-id`,
`client-request-id` and `Date` on every response, counts calls per endpoint and requests in
flight per mailbox (refusing those past Outlook's concurrency limit), and injects the
configured transient faults before (or, for "commit then 504", after) the real handler runs,
and the configured latency after it.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope

from visio_fakes.graph_emulator import batch, control, entra, graph, signin
from visio_fakes.graph_emulator.errors import (
    EntraError,
    GraphError,
    entra_error_response,
    graph_error_response,
)
from visio_fakes.graph_emulator.faults import Outcome
from visio_fakes.graph_emulator.settings import EmulatorSettings
from visio_fakes.graph_emulator.state import EmulatorState
from visio_fakes.graph_emulator.subjects import fault_subject

GRAPH_CONTENT_TYPE = (
    "application/json;odata.metadata=minimal;odata.streaming=true;"
    "IEEE754Compatible=false;charset=utf-8"
)


def create_app(settings: EmulatorSettings | None = None) -> FastAPI:
    """Build the emulator app with fresh in-memory state (reachable as `app.state.emulator`)."""
    settings = settings or EmulatorSettings()
    app = FastAPI(
        title="Visio RDV — Microsoft Graph + Entra ID emulator",
        docs_url="/_emulator/docs",
        openapi_url="/_emulator/openapi.json",
        swagger_ui_oauth2_redirect_url="/_emulator/docs/oauth2-redirect",
        redoc_url=None,
    )
    state = EmulatorState(settings)
    app.state.emulator = state
    app.include_router(control.router)
    app.include_router(batch.router)
    app.include_router(graph.router)
    app.include_router(entra.router)
    app.include_router(signin.router)
    _add_error_handlers(app, state)
    _add_front_door(app, state)
    return app


def _add_error_handlers(app: FastAPI, state: EmulatorState) -> None:
    """Errors in Graph's and Entra's own shapes (an unknown Graph segment answered as Graph
    does)."""

    @app.exception_handler(GraphError)
    async def on_graph_error(request: Request, exc: GraphError) -> Response:
        return graph_error_response(
            request, state.now(), exc.status, exc.code, exc.message, exc.headers
        )

    @app.exception_handler(EntraError)
    async def on_entra_error(request: Request, exc: EntraError) -> Response:
        return entra_error_response(
            request,
            state.now(),
            state.base_url,
            exc.status,
            exc.error,
            exc.aadsts,
            exc.description,
            exc.headers,
        )

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/v1.0"):
            # Graph answers unknown segments 400 and wrong methods 405, in its error shape.
            if exc.status_code == 404:
                segment = request.url.path.rstrip("/").rsplit("/", 1)[-1]
                return graph_error_response(
                    request,
                    state.now(),
                    400,
                    "BadRequest",
                    f"Resource not found for the segment '{segment}'.",
                )
            return graph_error_response(
                request, state.now(), exc.status_code, "BadRequest", str(exc.detail)
            )
        return Response(
            json.dumps({"detail": exc.detail}),
            status_code=exc.status_code,
            media_type="application/json",
        )


def _add_front_door(app: FastAPI, state: EmulatorState) -> None:
    """The middleware of the module docstring: ids, Date, counts, concurrency, faults."""

    @app.middleware("http")
    async def front_door(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        request_id = str(uuid.uuid4())
        request.state.request_id = request_id
        request.state.client_request_id = request.headers.get("client-request-id") or request_id
        endpoint, path_params = _route_of(request.scope)
        user_id = path_params.get("user_id")
        mailbox = user_id.lower() if isinstance(user_id, str) and user_id else None
        stats = state.stats  # the one this request counts in, even if a reset replaces it
        if endpoint is not None:
            stats.calls[endpoint] += 1
            client = request.scope.get("client")
            if client is not None and endpoint.startswith("graph."):
                stats.connections.add((client[0], client[1]))
        in_flight = stats.enter(mailbox) if mailbox is not None else 0
        try:
            limit = state.faults.config.mailbox_concurrency_limit
            if mailbox is not None and limit is not None and in_flight > limit:
                # Exchange refuses at once, without doing the work: no latency either.
                stats.concurrency_throttled[mailbox] += 1
                response = _concurrency_response(request, state)
            else:
                response = await _answer(request, call_next, state, endpoint, path_params)
        finally:
            if mailbox is not None:
                stats.leave(mailbox)
        response.headers["request-id"] = request_id
        response.headers["client-request-id"] = request.state.client_request_id
        # On the emulator's clock, which tests move forward (token expiry).
        response.headers["Date"] = email.utils.format_datetime(state.now(), usegmt=True)
        if endpoint is not None and endpoint.startswith("graph."):
            response.headers["x-ms-ags-diagnostic"] = json.dumps(
                {"ServerInfo": {"DataCenter": "Emulator", "Slice": "E", "Ring": "0"}}
            )
            if response.headers.get("content-type", "").startswith("application/json"):
                response.headers["content-type"] = GRAPH_CONTENT_TYPE
        elif endpoint is not None:
            response.headers["x-ms-request-id"] = request_id
        if endpoint is not None:
            stats.responses[endpoint][str(response.status_code)] += 1
        return response


async def _answer(
    request: Request,
    call_next: Callable[[Request], Awaitable[Response]],
    state: EmulatorState,
    endpoint: str | None,
    path_params: dict[str, Any],
) -> Response:
    """The handler's answer, or the fault configured for this call, after the latency."""
    if endpoint is None:
        return await call_next(request)
    subject = ""
    if state.faults.wants_subject(endpoint):
        subject = await fault_subject(request, state, endpoint, path_params)
    outcome, retry_after = state.faults.decide_with_delay(endpoint, subject)
    if outcome in (Outcome.THROTTLE, Outcome.UNAVAILABLE, Outcome.GATEWAY_TIMEOUT):
        response = _fault_response(request, state, endpoint, outcome, retry_after)
    else:
        response = await call_next(request)
        if outcome is Outcome.COMMIT_THEN_TIMEOUT:
            # The handler already changed the state; the client only sees a timeout.
            await _drain(response)
            response = _fault_response(request, state, endpoint, Outcome.GATEWAY_TIMEOUT)
    delay = state.faults.latency_seconds(endpoint)
    if delay:
        # After the work: the change is made whether or not the client waits for the answer.
        await asyncio.sleep(delay)
    return response


def _route_of(scope: Scope) -> tuple[str | None, dict[str, Any]]:
    """The route name of a Graph or Entra call (what stats count and faults target), and its
    path parameters (`user_id`, the mailbox it acts on; `event_id`, `meeting_id`…).

    Matched against the routers' own routes, not the app's: FastAPI wraps included
    routers, and the name is needed before routing happens.
    """
    partial: str | None = None
    routers = (batch.router, graph.router, entra.router, signin.router)
    for route in (route for router in routers for route in router.routes):
        match, child = route.matches(scope)
        if match is Match.FULL:
            return getattr(route, "name", None), dict(child.get("path_params", {}))
        if match is Match.PARTIAL and partial is None:
            partial = getattr(route, "name", None)
    if partial is None and scope["path"].startswith("/v1.0"):
        partial = "graph.unknown"
    return partial, {}


def _concurrency_response(request: Request, state: EmulatorState) -> Response:
    return graph_error_response(
        request,
        state.now(),
        429,
        "ApplicationThrottled",
        "Application is over its MailboxConcurrency limit.",
        {"Retry-After": state.faults.retry_after_header()},
    )


async def _drain(response: Response) -> None:
    body_iterator = getattr(response, "body_iterator", None)
    if body_iterator is not None:
        async for _chunk in body_iterator:
            pass


def _fault_response(
    request: Request,
    state: EmulatorState,
    endpoint: str,
    outcome: Outcome,
    retry_after_seconds: float | None = None,
) -> Response:
    retry_after = {"Retry-After": state.faults.retry_after_header(retry_after_seconds)}
    status = {Outcome.THROTTLE: 429, Outcome.UNAVAILABLE: 503}.get(outcome, 504)
    headers = retry_after if status in (429, 503) else None
    if endpoint.startswith("entra."):
        return entra_error_response(
            request,
            state.now(),
            state.base_url,
            status,
            "temporarily_unavailable",
            90033,
            "A transient error has occurred. Please try again.",
            headers,
        )
    code, message = {
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
    }[status]
    return graph_error_response(request, state.now(), status, code, message, headers)
