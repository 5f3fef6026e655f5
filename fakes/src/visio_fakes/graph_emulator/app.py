"""The emulator's FastAPI application: Entra ID + Graph routes, transport behaviour, control API.

The HTTP middleware stamps `request-id`, `client-request-id` and `Date` on every response and
leads each Graph or Entra call through Graph's front door (`front_door`): counted per endpoint
and in flight per mailbox (refused past Outlook's concurrency limit), the configured transient
faults injected before (or, for "commit then 504", after) the real handler runs, and the
configured latency after it. The requests of a `$batch` pass the same door (`batch`).
"""

from __future__ import annotations

import email.utils
import json
import uuid
from typing import Any

from fastapi import FastAPI, Request, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from visio_fakes.graph_emulator import batch, control, entra, graph, signin
from visio_fakes.graph_emulator.errors import (
    EntraError,
    GraphError,
    entra_error_response,
    graph_error_response,
)
from visio_fakes.graph_emulator.front_door import Refusal, through
from visio_fakes.graph_emulator.routes import GRAPH_CONTENT_TYPE
from visio_fakes.graph_emulator.settings import EmulatorSettings
from visio_fakes.graph_emulator.state import EmulatorState
from visio_fakes.graph_emulator.subjects import fault_subject

DIAGNOSTIC = json.dumps({"ServerInfo": {"DataCenter": "Emulator", "Slice": "E", "Ring": "0"}})


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
    app.add_middleware(FrontDoor, state=state)
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


class FrontDoor:
    """The middleware of the module docstring: ids, Date, and the front door of each call.

    Plain ASGI (Starlette's `BaseHTTPMiddleware` ran each request in a task group of its own,
    with streams between it and the app): the answer is taken whole from the app, then sent.
    """

    def __init__(self, app: ASGIApp, state: EmulatorState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = self.state
        request = Request(scope, receive)
        request_id = str(uuid.uuid4())
        request.state.request_id = request_id
        request.state.client_request_id = request.headers.get("client-request-id") or request_id
        endpoint, path_params = _route_of(scope)
        if endpoint is None:
            response = await _taken(self.app, request)
        else:
            client = scope.get("client")
            if client is not None and endpoint.startswith("graph."):
                state.stats.connections.add((client[0], client[1]))
            user_id = path_params.get("user_id")
            response = await through(
                state,
                endpoint,
                user_id.lower() if isinstance(user_id, str) and user_id else None,
                subject=lambda: fault_subject(
                    state, endpoint, path_params, request.query_params, lambda: _payload(request)
                ),
                handle=lambda: _taken(self.app, request),
                refuse=lambda refusal: _refusal_response(request, state, endpoint, refusal),
                status_of=lambda answer: answer.status_code,
                discard=_nothing,
            )
        response.headers["request-id"] = request_id
        response.headers["client-request-id"] = request.state.client_request_id
        # On the emulator's clock, which tests move forward (token expiry).
        response.headers["Date"] = email.utils.format_datetime(state.now(), usegmt=True)
        if endpoint is not None and endpoint.startswith("graph."):
            response.headers["x-ms-ags-diagnostic"] = DIAGNOSTIC
            if response.headers.get("content-type", "").startswith("application/json"):
                response.headers["content-type"] = GRAPH_CONTENT_TYPE
        elif endpoint is not None:
            response.headers["x-ms-request-id"] = request_id
        await response(scope, receive, send)


async def _taken(app: ASGIApp, request: Request) -> Response:
    """The app's whole answer to `request` (its body given again if the door read it)."""
    body = getattr(request, "_body", None)  # Starlette keeps what `request.body()` read
    delivered = body is None

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await request.receive()

    answer = Response()
    chunks: list[bytes] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            answer.status_code = message["status"]
            answer.raw_headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(request.scope, receive, send)
    answer.body = b"".join(chunks)
    return answer


async def _nothing(_response: Response) -> None:
    return None


async def _payload(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError:
        return None


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


def _refusal_response(
    request: Request, state: EmulatorState, endpoint: str, refusal: Refusal
) -> Response:
    """A refusal in Graph's error shape, or Entra's for the token endpoint's faults."""
    headers = refusal.headers or None
    if endpoint.startswith("entra."):
        return entra_error_response(
            request,
            state.now(),
            state.base_url,
            refusal.status,
            "temporarily_unavailable",
            90033,
            "A transient error has occurred. Please try again.",
            headers,
        )
    return graph_error_response(
        request, state.now(), refusal.status, refusal.code, refusal.message, headers
    )
