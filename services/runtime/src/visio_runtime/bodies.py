"""HTTP request bodies, read with their limit as they arrive: a body past the limit is refused
(413) once the limit is crossed — or before reading anything when its Content-Length says so
— never read whole first. The JSON APIs' bodies are then read strictly (`json_input`), so any
body that is not a request gets a problem+json 4xx; the pages' forms get their fields or
nothing."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from fastapi import Request

from visio_runtime.json_input import Unreadable, duplicate_keys, read_json
from visio_runtime.problems import Problem, invalid, too_large

FORM = "application/x-www-form-urlencoded"


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or `Problem` 413 as soon as it is known to pass `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large(limit)
    return bytes(body)


async def read_json_body(request: Request, limit: int) -> Any:
    """The JSON document the body holds: 413 past `limit`, 400 for anything that is not JSON
    (invalid UTF-8, a byte-order mark, nesting too deep…), 422 naming each key given twice."""
    body = await read_body(request, limit)
    try:
        document = read_json(body)
    except Unreadable as exc:
        raise Problem(400, "malformed", "Malformed JSON", f"the body is {exc.reason}") from None
    repeated = duplicate_keys(body)
    if repeated:
        raise invalid([{"field": path, "message": "given more than once"} for path in repeated])
    return document


async def read_form(request: Request, limit: int, max_fields: int = 10) -> dict[str, str]:
    """The fields of a urlencoded form, first value of each; {} for anything else (too big,
    not a form, not UTF-8, too many fields): a page then refuses it for its missing token."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != FORM:
        return {}
    try:
        body = await read_body(request, limit)
        fields = parse_qs(body.decode("utf-8"), max_num_fields=max_fields)
    except (Problem, UnicodeDecodeError, ValueError):
        return {}
    return {name: values[0] for name, values in fields.items() if values}
