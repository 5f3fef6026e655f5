"""The emulator's ASGI application: Graph, Entra ID, the users' sign-in, the control API.

Its middleware (`FrontDoor`) stamps `request-id`, `client-request-id` and `Date` on every
response and leads each Graph or Entra call through Graph's front door (`front_door`): counted
per endpoint and in flight per mailbox (refused past Outlook's concurrency limit), the
configured transient faults injected before (or, for "commit then 504", after) the real handler
runs, and the configured latency after it. Graph's requests (under /v1.0, `$batch` among them)
are answered there from Graph's route table (`routes`); a batch's requests pass the same door
(`batch`). FastAPI routes the rest.
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

from visio_fakes.graph_emulator import batch, control, entra, graph, signin  # noqa: F401
from visio_fakes.graph_emulator.errors import (
    EntraError,
    entra_error_response,
    graph_error_response,
)
from visio_fakes.graph_emulator.front_door import Refusal, answer_call, through
from visio_fakes.graph_emulator.routes import GRAPH_CONTENT_TYPE, GraphCall, http_response
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
    app.include_router(entra.router)
    app.include_router(signin.router)
    _add_error_handlers(app, state)
    app.add_middleware(FrontDoor, state=state)
    return app


def _add_error_handlers(app: FastAPI, state: EmulatorState) -> None:
    """Errors in Entra's own shape (Graph's are written by the front door, `answer_call`)."""

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
        return Response(
            json.dumps({"detail": exc.detail}),
            status_code=exc.status_code,
            media_type="application/json",
        )


class FrontDoor:
    """The middleware of the module docstring: ids, Date, and the front door of each call.

    Plain ASGI (Starlette's `BaseHTTPMiddleware` ran each request in a task group of its own,
    with streams between it and the app). A Graph request (under /v1.0) is answered here from
    Graph's route table (`routes`), without FastAPI's router; the others (Entra, sign-in, the
    control API) by the app, their answer taken whole, then sent.
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
        endpoint: str | None
        if scope["path"].startswith("/v1.0"):  # Graph's, `batch` among them
            endpoint, response = await self._graph(request)
        else:
            endpoint, response = await self._other(request)
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

    async def _graph(self, request: Request) -> tuple[str, Response]:
        state = self.state
        path = request.scope["path"]
        endpoint, handler, params = graph.routes.match(request.method, path)
        client = request.scope.get("client")
        if client is not None:
            state.stats.connections.add((client[0], client[1]))
        call = GraphCall(
            state=state,
            path=path,
            params=params,
            query=request.query_params,
            headers=request.headers,
            body=await request.body(),
            request_id=request.state.request_id,
            client_request_id=request.state.client_request_id,
        )
        answer = await answer_call(call, endpoint, handler)
        return endpoint or "graph.unknown", http_response(answer)

    async def _other(self, request: Request) -> tuple[str | None, Response]:
        """Entra's token endpoint and the users' sign-in pass the door; the control API not."""
        state = self.state
        endpoint, path_params = _route_of(request.scope)
        if endpoint is None:
            return None, await _taken(self.app, request)
        response = await through(
            state,
            endpoint,
            None,
            subject=lambda: fault_subject(
                state, endpoint, path_params, request.query_params, lambda: _payload(request)
            ),
            handle=lambda: _taken(self.app, request),
            refuse=lambda refusal: _refusal_response(request, state, endpoint, refusal),
            status_of=lambda answer: answer.status_code,
            discard=_nothing,
        )
        return endpoint, response


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
    """The route name of an Entra call (what stats count and faults target), and its path
    parameters. Matched against the routers' own routes, not the app's: FastAPI wraps included
    routers, and the name is needed before routing happens.
    """
    partial: str | None = None
    for route in (route for router in (entra.router, signin.router) for route in router.routes):
        match, child = route.matches(scope)
        if match is Match.FULL:
            return getattr(route, "name", None), dict(child.get("path_params", {}))
        if match is Match.PARTIAL and partial is None:
            partial = getattr(route, "name", None)
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
