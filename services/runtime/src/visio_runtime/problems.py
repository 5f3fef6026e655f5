"""Errors as application/problem+json (RFC 9457), naming each invalid field: one kit for every
service's API (booking's and consent's). Booking's Kafka requests are refused with the same
problems (`BookingRejected`), so both channels refuse alike.

An HTTP answer is never a bare 500 page: an error nobody foresaw is a problem+json too, and a
body that is not a valid request is refused with a 4xx before anything else sees it
(`visio_runtime.bodies`)."""

from __future__ import annotations

import logging
from typing import Any

import pydantic
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from visio_shared.booking_requests import FieldErrors

log = logging.getLogger(__name__)

PROBLEM_BASE = "https://visio-rdv.caf.fr/problems/"
PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    def __init__(
        self,
        status: int,
        kind: str,
        title: str,
        detail: str,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail
        self.headers = headers
        self.extra = extra

    @property
    def type(self) -> str:
        return PROBLEM_BASE + self.kind

    @property
    def errors(self) -> list[dict[str, str]]:
        errors: list[dict[str, str]] = self.extra.get("errors", [])
        return errors


def invalid(errors: list[dict[str, str]]) -> Problem:
    """The 422 that names each invalid field."""
    summary = "; ".join(f"{error['field']}: {error['message']}" for error in errors)
    return Problem(422, "validation", "The request is not valid", summary, errors=errors)


def field_errors(errors: list[Any]) -> list[dict[str, str]]:
    """Pydantic errors as [{"field": "user.email", "message": ...}], cross-field ones unpacked."""
    out: list[dict[str, str]] = []
    for error in errors:
        raised = (error.get("ctx") or {}).get("error")
        if isinstance(raised, FieldErrors):
            out.extend({"field": field, "message": message} for field, message in raised.errors)
            continue
        location = [str(part) for part in error["loc"] if part not in ("body",)]
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        out.append({"field": ".".join(location) or "(body)", "message": message})
    return out


def as_problem(exc: Exception) -> Problem | None:
    """The problem a refusal amounts to; None for anything that is not a refusal."""
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, pydantic.ValidationError):
        return invalid(field_errors(exc.errors(include_url=False)))
    return None


def problem_response(problem: Problem, instance: str) -> JSONResponse:
    body = {
        "type": problem.type,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "instance": instance,
        **problem.extra,
    }
    return JSONResponse(
        body, status_code=problem.status, media_type=PROBLEM_JSON, headers=problem.headers
    )


def too_large(limit: int) -> Problem:
    return Problem(413, "too-large", "Too Large", f"the body exceeds {limit} bytes")


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(invalid(field_errors(list(exc.errors()))), request.url.path)

    @app.exception_handler(pydantic.ValidationError)
    async def on_invalid_model(request: Request, exc: pydantic.ValidationError) -> JSONResponse:
        return problem_response(
            invalid(field_errors(exc.errors(include_url=False))), request.url.path
        )

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, exc: HTTPException) -> JSONResponse:
        kinds = {401: "unauthorized", 403: "forbidden", 404: "not-found", 405: "not-allowed"}
        titles = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 413: "Too Large"}
        problem = Problem(
            exc.status_code,
            kinds.get(exc.status_code, "http"),
            titles.get(exc.status_code, "Error"),
            str(exc.detail),
        )
        return problem_response(problem, request.url.path)

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> JSONResponse:
        # Ours, not the caller's: said without a word of it (its text may quote the request),
        # and by the route's template (a path may hold a self-service link's token).
        route = getattr(request.scope.get("route"), "path", "?")
        log.error("%s %s failed: %s", request.method, route, type(exc).__name__)
        problem = Problem(500, "internal", "Internal Error", "the service failed; try again later")
        return problem_response(problem, request.url.path)
