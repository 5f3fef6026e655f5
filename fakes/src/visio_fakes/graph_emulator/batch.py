"""`POST /v1.0/$batch`: Microsoft Graph's JSON batching, as learn.microsoft.com/graph/json-batching
documents it.

- The body is `{"requests": [...]}`, at most 20 requests, each with a unique `id`, a `method`
  and a URL relative to the version (`/users/{id}/events`); a request with a `body` names its
  `Content-Type` in `headers`. A batch that breaks these rules is refused whole (400).
- Each request is served as if it came alone: the same routes, token check, permissions,
  faults, latency, stats and mailbox concurrency limit (the front door sees each one). So a
  request of a batch can be throttled (429 with its own `Retry-After` in its own headers)
  while its neighbours succeed; the batch itself answers 200.
- Answers carry `id`, `status`, `headers` and `body`, in any order: this emulator shuffles
  them (seeded), so a client that pairs answers with requests by position fails here.
- Outlook (calendar events) runs at most 4 requests of a batch at a time, whatever their
  mailbox: a batch of 20 event look-ups takes five rounds of Graph's latency. Batching saves
  the client's requests, not Graph's time. The others run side by side.
- `dependsOn` only orders: a request starts once the requests it names are answered, and gets
  424 Failed Dependency if one of them failed. It cannot use their answers.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.types import Message, Scope

from visio_fakes.graph_emulator.errors import GraphError, graph_error_body, request_ids
from visio_fakes.graph_emulator.state import EmulatorState

router = APIRouter(prefix="/v1.0")

MAX_REQUESTS = 20
OUTLOOK_REQUESTS_AT_ONCE = 4
_METHODS = frozenset({"GET", "POST", "PATCH", "PUT", "DELETE"})
# Headers of an answer that describe the HTTP exchange, not the request's result.
_TRANSPORT_HEADERS = frozenset({"content-length", "date", "connection", "x-ms-ags-diagnostic"})


def _state(request: Request) -> EmulatorState:
    state: EmulatorState = request.app.state.emulator
    return state


def _invalid(message: str) -> GraphError:
    return GraphError(400, "BadRequest", message)


def _validate(payload: Any) -> list[dict[str, Any]]:
    """The batch's requests, or the 400 Graph answers for the whole batch."""
    if not isinstance(payload, dict) or not isinstance(payload.get("requests"), list):
        raise _invalid("Invalid batch payload format: a 'requests' collection is required.")
    requests: list[dict[str, Any]] = payload["requests"]
    if not requests:
        raise _invalid("Invalid batch payload format: the 'requests' collection is empty.")
    if len(requests) > MAX_REQUESTS:
        raise _invalid(f"The number of batch requests exceeds the maximum of {MAX_REQUESTS}.")
    seen: set[str] = set()
    for item in requests:
        if not isinstance(item, dict):
            raise _invalid("Invalid batch payload format: each request must be an object.")
        request_id = item.get("id")
        if not isinstance(request_id, str) or not request_id:
            raise _invalid("Invalid batch payload format: each request needs a string 'id'.")
        if request_id in seen:
            raise _invalid(f"Batch request id '{request_id}' is not unique.")
        if not isinstance(item.get("method"), str) or not isinstance(item.get("url"), str):
            raise _invalid(f"Batch request '{request_id}' needs a 'method' and a 'url'.")
        depends = item.get("dependsOn", [])
        if not isinstance(depends, list) or not all(d in seen for d in depends):
            # Only requests named before it: a cycle cannot be written.
            raise _invalid(
                f"Batch request '{request_id}' depends on a request not before it in the batch."
            )
        seen.add(request_id)
    return requests


@router.post("/$batch", name="graph.batch")
async def batch(request: Request) -> JSONResponse:
    state = _state(request)
    raw = await request.body()
    try:
        payload = json.loads(raw)
    except ValueError:
        raise _invalid("Unable to read JSON request payload.") from None
    requests = _validate(payload)
    state.stats.batches += 1
    state.stats.batched_requests += len(requests)
    outlook = asyncio.Semaphore(OUTLOOK_REQUESTS_AT_ONCE)
    answered: dict[str, asyncio.Future[dict[str, Any]]] = {
        item["id"]: asyncio.get_running_loop().create_future() for item in requests
    }

    async def run(item: dict[str, Any]) -> None:
        future = answered[item["id"]]
        try:
            future.set_result(await _serve_one(request, item, answered, outlook))
        except Exception as exc:  # a handler's bug is this request's 500, not the batch's
            failed = _error_answer(request, state, item["id"], 500, "InternalError", repr(exc))
            future.set_result(failed)

    await asyncio.gather(*(run(item) for item in requests))
    responses = [answered[item["id"]].result() for item in requests]
    # Graph answers in any order: so does the emulator, reproducibly for a seed.
    random.Random(f"{state.faults.config.seed}/{state.stats.batches}").shuffle(responses)
    return JSONResponse({"responses": responses})


async def _serve_one(
    outer: Request,
    item: dict[str, Any],
    answered: dict[str, asyncio.Future[dict[str, Any]]],
    outlook: asyncio.Semaphore,
) -> dict[str, Any]:
    state = _state(outer)
    request_id = item["id"]
    for dependency in item.get("dependsOn", []):
        before = await answered[dependency]
        if not 200 <= before["status"] < 300:
            return _error_answer(
                outer,
                state,
                request_id,
                424,
                "FailedDependency",
                f"The request depends on request '{dependency}', which failed.",
            )
    method = item["method"].upper()
    url: str = item["url"]
    headers = item.get("headers") or {}
    if method not in _METHODS or url.lower().startswith(("http:", "https:")):
        return _error_answer(
            outer, state, request_id, 400, "BadRequest", "Invalid method or non-relative url."
        )
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        return _error_answer(
            outer, state, request_id, 400, "BadRequest", "'headers' must map names to strings."
        )
    body = b""
    if "body" in item:
        if not any(k.lower() == "content-type" for k in headers):
            return _error_answer(
                outer,
                state,
                request_id,
                400,
                "BadRequest",
                "Content-Type header must be specified when a request body is present.",
            )
        body = json.dumps(item["body"]).encode()
    path, _, query = url.lstrip("/").partition("?")
    if path.split("/", 1)[0].lower() == "$batch":
        return _error_answer(outer, state, request_id, 400, "BadRequest", "Nested batch.")
    outlook_request = path.split("/")[2:3] in (["events"], ["calendar"])
    if outlook_request:
        async with outlook:
            status, answer_headers, content = await _call(outer, method, path, query, headers, body)
    else:
        status, answer_headers, content = await _call(outer, method, path, query, headers, body)
    answer: dict[str, Any] = {"id": request_id, "status": status, "headers": answer_headers}
    if content:
        try:
            answer["body"] = json.loads(content)
        except ValueError:
            answer["body"] = content.decode("utf-8", "replace")
    return answer


async def _call(
    outer: Request, method: str, path: str, query: str, headers: dict[str, str], body: bytes
) -> tuple[int, dict[str, str], bytes]:
    """Serve one request of the batch through the whole app (front door included), in process."""
    forwarded = {k.lower(): v for k, v in headers.items()}
    authorization = outer.headers.get("authorization")
    if authorization is not None:
        forwarded.setdefault("authorization", authorization)  # the batch's token serves all
    forwarded["content-length"] = str(len(body))
    full_path = f"/v1.0/{path}"
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": outer.url.scheme,
        "path": full_path,
        "raw_path": full_path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in forwarded.items()],
        "client": outer.scope.get("client"),
        "server": outer.scope.get("server"),
    }
    done = asyncio.Event()
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    status = 500
    answer_headers: dict[str, str] = {}
    chunks: list[bytes] = []

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            for name, value in message.get("headers", []):
                key = name.decode("latin-1").lower()
                if key not in _TRANSPORT_HEADERS:
                    # As Graph writes them in a batch: Content-Type, Retry-After…
                    title = "-".join(part.capitalize() for part in key.split("-"))
                    answer_headers[title] = value.decode("latin-1")
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    try:
        await outer.app(scope, receive, send)
    finally:
        done.set()
    return status, answer_headers, b"".join(chunks)


def _error_answer(
    outer: Request, state: EmulatorState, request_id: str, status: int, code: str, message: str
) -> dict[str, Any]:
    graph_request_id, client_request_id = request_ids(outer)
    return {
        "id": request_id,
        "status": status,
        "headers": {"Content-Type": "application/json"},
        "body": graph_error_body(
            code,
            message,
            now=state.now(),
            request_id=graph_request_id,
            client_request_id=client_request_id,
        ),
    }
