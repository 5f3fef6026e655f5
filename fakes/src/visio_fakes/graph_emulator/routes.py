"""Graph's routes: a table built once, from which the front door answers a Graph request that
comes alone (`app.FrontDoor`) and each request of a `$batch` (`batch.py`), with the same
handlers. Going through FastAPI for them (its middleware, router, dependency resolution,
Starlette's request and response objects), and once more for each request of a batch with its
answer written to JSON and read back, was most of what the emulator cost per meeting (issue
20: the fakes must not hide us).

A handler reads a `GraphCall` (whichever way the request came) and returns an `Answer`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import Response
from pydantic_core import to_json

from visio_fakes.graph_emulator.errors import GraphError
from visio_fakes.graph_emulator.state import EmulatorState

GRAPH_CONTENT_TYPE = (
    "application/json;odata.metadata=minimal;odata.streaming=true;"
    "IEEE754Compatible=false;charset=utf-8"
)
NO_BODY: Any = object()


@dataclass
class GraphCall:
    """One Graph request as its handler reads it."""

    state: EmulatorState
    path: str  # "/v1.0/users/…", percent-decoded (as Starlette gives it)
    params: Mapping[str, str]  # the path's parameters: user_id, event_id…
    query: Mapping[str, str]  # the last value of each query parameter, as Starlette's
    headers: Mapping[str, str]  # looked up by lower-case name
    body: bytes = b""
    parsed: Any = NO_BODY  # a $batch request's body: JSON already parsed
    request_id: str = ""  # the ids it is answered under (Graph's errors name them)
    client_request_id: str = ""

    def option(self, name: str) -> str | None:
        """An OData system query option: Graph accepts it with or without its '$'."""
        return self.query.get(f"${name}") or self.query.get(name)

    def has_body(self) -> bool:
        return self.parsed is not NO_BODY or bool(self.body.strip())

    def payload(self) -> Any:
        """The body's JSON value; ValueError when it is not JSON."""
        if self.parsed is not NO_BODY:
            return self.parsed
        return json.loads(self.body)

    def json_object(self) -> dict[str, Any]:
        """The body, which must be a JSON object (Graph's 400s otherwise)."""
        if not self.has_body():
            raise GraphError(400, "BadRequest", "Empty Payload. JSON content expected.")
        try:
            payload = self.payload()
        except ValueError:
            raise GraphError(
                400,
                "BadRequest",
                "Unable to read JSON request payload. Please ensure Content-Type header is set "
                "and payload is of valid JSON format.",
            ) from None
        if not isinstance(payload, dict):
            raise GraphError(400, "BadRequest", "The request payload must be a JSON object.")
        return payload


@dataclass
class Answer:
    """A handler's answer: `body` a JSON value, bytes of `media_type`, or None (no content)."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    media_type: str = "application/json"


Handler = Callable[[GraphCall], Answer | Awaitable[Answer]]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    name: str
    handler: Handler


def _pattern(template: str) -> re.Pattern[str]:
    """`/users/{user_id}/events` as Starlette matches it: a parameter is one whole segment."""
    parts = re.split(r"\{(\w+)\}", template)
    regex = "".join(f"(?P<{p}>[^/]+)" if n % 2 else re.escape(p) for n, p in enumerate(parts))
    return re.compile(f"^{regex}$")


class Routes:
    """The routes under `prefix`, matched in the order they were added."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._routes: list[Route] = []

    def add(self, method: str, *paths: str, name: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            for path in paths:
                self._routes.append(Route(method, _pattern(self.prefix + path), name, handler))
            return handler

        return register

    def match(self, method: str, path: str) -> tuple[str | None, Handler | None, dict[str, str]]:
        """(route name, handler, path parameters) of a request. A path served for other methods
        only gives that route's name without a handler (405); an unknown path, neither."""
        for route in self._routes:
            if route.method == method and (found := route.pattern.match(path)) is not None:
                return route.name, route.handler, found.groupdict()
        other = next((route for route in self._routes if route.pattern.match(path)), None)
        return (other.name if other is not None else None), None, {}


def http_response(answer: Answer) -> Response:
    if answer.body is None:
        return Response(status_code=answer.status, headers=answer.headers)
    if isinstance(answer.body, bytes):
        return Response(
            answer.body,
            status_code=answer.status,
            headers=answer.headers,
            media_type=answer.media_type,
        )
    # The bytes JSONResponse writes (compact, UTF-8), by pydantic-core: a $batch's twenty
    # events through `json` were a sixth of the emulator's CPU in the bench.
    return Response(
        to_json(answer.body),
        status_code=answer.status,
        headers=answer.headers,
        media_type="application/json",
    )
