"""HTTP server metrics for every service's FastAPI app: rate, status and latency by route.

A plain ASGI middleware rather than a library (prometheus-fastapi-instrumentator and the like
bring their own registry and naming; ours is per runtime, `visio_` prefixed). The route label
is the template the router matched (`/v1/appointments/{appointment_id}`), read from the scope
once the router has run, so an id never becomes a label value; a path no route matches is
`unmatched`, so a scanner's guesses cannot mint series.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from visio_runtime.metrics import HttpMetrics

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"


def route_label(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED


class HttpMetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in METHODS else "other"
        status = 500  # an exception before the answer started is answered 500
        started = time.perf_counter()

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.metrics.in_progress.dec()
            route = route_label(scope)
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.duration.labels(method, route).observe(time.perf_counter() - started)
