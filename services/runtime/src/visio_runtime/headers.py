"""The security headers of every answer of a public port: the pages' own (visio_runtime.pages
sets a stricter Content-Security-Policy with its stylesheet's hash), and the same defaults for
the API's JSON, the redirects and the errors, which no template renders.

A pure ASGI middleware: it adds what a response lacks when it starts, so a route may still set
its own value, and nothing is buffered."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_HEADERS = {
    # Nothing of ours is meant to run scripts, load anything or be framed.
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}
# In production the public URLs are https: browsers are told never to try http again.
HSTS = ("strict-transport-security", "max-age=31536000; includeSubDomains")


class SecurityHeaders:
    def __init__(self, app: ASGIApp, hsts: bool = False) -> None:
        self.app = app
        self.defaults = [(name.encode(), value.encode()) for name, value in DEFAULT_HEADERS.items()]
        if hsts:
            self.defaults.append((HSTS[0].encode(), HSTS[1].encode()))

    async def __call__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in self.defaults if name not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def security_header_problems(headers: Any, page: bool = False) -> list[str]:
    """What an answer of a public port lacks (empty: nothing), for the tests of every service:
    never framed (CSP `frame-ancestors 'none'` and X-Frame-Options), never telling the next
    site where the person came from, never sniffed; a page also never cached, and allowed no
    script and no resource but its stylesheet."""
    problems: list[str] = []
    csp = headers.get("content-security-policy", "")
    if "frame-ancestors 'none'" not in csp:
        problems.append(f"CSP without frame-ancestors 'none': {csp!r}")
    if not csp.startswith("default-src 'none'"):
        problems.append(f"CSP not default-src 'none': {csp!r}")
    expected = {
        "referrer-policy": "no-referrer",
        "x-frame-options": "DENY",
        "x-content-type-options": "nosniff",
    }
    if page:
        expected["cache-control"] = "no-store"
        if "script-src" in csp or "'unsafe-inline'" in csp:
            problems.append(f"a page's CSP allows scripts or inline code: {csp!r}")
    for name, value in expected.items():
        if headers.get(name) != value:
            problems.append(f"{name}: {headers.get(name)!r}, expected {value!r}")
    return problems
