"""Errors as application/problem+json (RFC 9457), naming each invalid field."""

from __future__ import annotations

from typing import Any

import pydantic
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from visio_booking.contract import FieldErrors

PROBLEM_BASE = "https://visio-rdv.caf.fr/problems/"
PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    def __init__(self, status: int, kind: str, title: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail
        self.extra = extra


def problem_response(
    status: int, kind: str, title: str, detail: str, instance: str, **extra: Any
) -> JSONResponse:
    body = {
        "type": PROBLEM_BASE + kind,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


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


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            exc.status, exc.kind, exc.title, exc.detail, request.url.path, **exc.extra
        )

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = field_errors(list(exc.errors()))
        return _invalid(request, errors)

    @app.exception_handler(pydantic.ValidationError)
    async def on_invalid_model(request: Request, exc: pydantic.ValidationError) -> JSONResponse:
        return _invalid(request, field_errors(exc.errors(include_url=False)))

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, exc: HTTPException) -> JSONResponse:
        titles = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 413: "Too Large"}
        return problem_response(
            exc.status_code,
            {401: "unauthorized", 403: "forbidden", 404: "not-found"}.get(exc.status_code, "http"),
            titles.get(exc.status_code, "Error"),
            str(exc.detail),
            request.url.path,
        )


def _invalid(request: Request, errors: list[dict[str, str]]) -> JSONResponse:
    summary = "; ".join(f"{error['field']}: {error['message']}" for error in errors)
    return problem_response(
        422,
        "validation",
        "The request is not valid",
        summary,
        request.url.path,
        errors=errors,
    )
