"""Errors as application/problem+json (RFC 9457), like booking's, naming each invalid field."""

from __future__ import annotations

from typing import Any

import pydantic
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

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


def _response(request: Request, problem: Problem) -> JSONResponse:
    body = {
        "type": PROBLEM_BASE + problem.kind,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "instance": request.url.path,
        **problem.extra,
    }
    return JSONResponse(body, status_code=problem.status, media_type=PROBLEM_JSON)


def _invalid(errors: list[Any]) -> Problem:
    fields = []
    for error in errors:
        location = [str(part) for part in error["loc"] if part not in ("body", "path")]
        message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
        fields.append({"field": ".".join(location) or "(body)", "message": message})
    summary = "; ".join(f"{field['field']}: {field['message']}" for field in fields)
    return Problem(422, "validation", "The request is not valid", summary, errors=fields)


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> JSONResponse:
        return _response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _response(request, _invalid(list(exc.errors())))

    @app.exception_handler(pydantic.ValidationError)
    async def on_invalid_model(request: Request, exc: pydantic.ValidationError) -> JSONResponse:
        return _response(request, _invalid(exc.errors(include_url=False)))

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, exc: HTTPException) -> JSONResponse:
        kinds = {401: "unauthorized", 403: "forbidden", 404: "not-found", 405: "not-allowed"}
        kind = kinds.get(exc.status_code, "http")
        title = kind.replace("-", " ").capitalize()
        return _response(request, Problem(exc.status_code, kind, title, str(exc.detail)))
