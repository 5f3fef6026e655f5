"""Error shapes of Microsoft Graph and of the Entra ID token endpoint.

Graph answers `{"error": {"code", "message", "innerError": {"date", "request-id",
"client-request-id"}}}`; the token endpoint answers OAuth2 errors enriched with AADSTS codes.
Clients branch on these bodies (e.g. `error_codes` or `error.code`), so they are reproduced.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse


class GraphError(Exception):
    """Raised by Graph handlers; rendered as Graph's JSON error body."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


class EntraError(Exception):
    """Raised by Entra handlers; rendered as an OAuth2 error with an AADSTS code."""

    def __init__(
        self,
        status: int,
        error: str,
        aadsts: int,
        description: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {error}: AADSTS{aadsts}: {description}")
        self.status = status
        self.error = error
        self.aadsts = aadsts
        self.description = description
        self.headers = headers or {}


def request_ids(request: Request) -> tuple[str, str]:
    """The (request-id, client-request-id) pair the middleware assigned to this request."""
    request_id = getattr(request.state, "request_id", "")
    return request_id, getattr(request.state, "client_request_id", request_id)


def graph_error_body(
    code: str, message: str, *, now: dt.datetime, request_id: str, client_request_id: str
) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": now.strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": request_id,
                "client-request-id": client_request_id,
            },
        }
    }


def entra_error_body(
    error: str,
    aadsts: int,
    description: str,
    *,
    now: dt.datetime,
    trace_id: str,
    correlation_id: str,
    base_url: str,
) -> dict[str, Any]:
    timestamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
    return {
        "error": error,
        "error_description": (
            f"AADSTS{aadsts}: {description}\r\nTrace ID: {trace_id}\r\n"
            f"Correlation ID: {correlation_id}\r\nTimestamp: {timestamp}"
        ),
        "error_codes": [aadsts],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": f"{base_url}/error?code={aadsts}",
    }


def graph_error_response(
    request: Request,
    now: dt.datetime,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    request_id, client_request_id = request_ids(request)
    body = graph_error_body(
        code, message, now=now, request_id=request_id, client_request_id=client_request_id
    )
    return JSONResponse(body, status_code=status, headers=headers)


def entra_error_response(
    request: Request,
    now: dt.datetime,
    base_url: str,
    status: int,
    error: str,
    aadsts: int,
    description: str,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    request_id, client_request_id = request_ids(request)
    body = entra_error_body(
        error,
        aadsts,
        description,
        now=now,
        trace_id=request_id,
        correlation_id=client_request_id,
        base_url=base_url,
    )
    # Entra never lets token responses, even errors, be cached.
    all_headers = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache", **(headers or {})}
    return JSONResponse(body, status_code=status, headers=all_headers)
