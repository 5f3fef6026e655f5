"""`POST /v1.0/$batch`: Microsoft Graph's JSON batching, as learn.microsoft.com/graph/json-batching
documents it.

- The body is `{"requests": [...]}`, at most 20 requests, each with a unique `id`, a `method`
  and a URL relative to the version (`/users/{id}/events`); a request with a `body` names its
  `Content-Type` in `headers`. A batch that breaks these rules is refused whole (400).
- Each request is served as if it came alone: the same routes, token check, permissions,
  faults, latency, stats and mailbox concurrency limit (each passes the front door,
  `front_door`). So a request of a batch can be throttled (429 with its own `Retry-After` in
  its own headers) while its neighbours succeed; the batch itself answers 200. It is handed to
  its handler directly (`routes`: the route table built once), not through the ASGI app: the
  batch's work is the handlers', not twenty rounds of middleware, routing and JSON.
- Answers carry `id`, `status`, `headers` and `body`, in any order: this emulator shuffles
  them (seeded), so a client that pairs answers with requests by position fails here. A body
  that is not JSON (a recording's content) is given in base64, as Graph does.
- Outlook (calendar events) runs at most 4 requests of a batch at a time, whatever their
  mailbox: a batch of 20 event look-ups takes five rounds of Graph's latency. Batching saves
  the client's requests, not Graph's time. The others run side by side. The stats count the
  Outlook requests that had to wait for a round (`outlook_requests_queued`).
- `dependsOn` only orders: a request starts once the requests it names are answered, and gets
  424 Failed Dependency if one of them failed. It cannot use their answers.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import uuid
from typing import Any
from urllib.parse import parse_qsl, unquote

from visio_fakes.graph_emulator import graph
from visio_fakes.graph_emulator.errors import GraphError, graph_error_body
from visio_fakes.graph_emulator.front_door import answer_call
from visio_fakes.graph_emulator.routes import (
    GRAPH_CONTENT_TYPE,
    NO_BODY,
    Answer,
    GraphCall,
    Handler,
)

MAX_REQUESTS = 20
OUTLOOK_REQUESTS_AT_ONCE = 4
_METHODS = frozenset({"GET", "POST", "PATCH", "PUT", "DELETE"})


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


@graph.routes.add("POST", "/$batch", name="graph.batch")
async def batch(call: GraphCall) -> Answer:
    state = call.state
    try:
        payload = json.loads(call.body)
    except ValueError:
        raise _invalid("Unable to read JSON request payload.") from None
    requests = _validate(payload)
    state.stats.batches += 1
    state.stats.batched_requests += len(requests)
    outlooks = sum(_is_outlook(str(item["url"])) for item in requests)
    state.stats.outlook_requests_queued += max(0, outlooks - OUTLOOK_REQUESTS_AT_ONCE)
    outlook = asyncio.Semaphore(OUTLOOK_REQUESTS_AT_ONCE)
    answered: dict[str, asyncio.Future[dict[str, Any]]] = {
        item["id"]: asyncio.get_running_loop().create_future() for item in requests
    }

    async def run(item: dict[str, Any]) -> None:
        future = answered[item["id"]]
        try:
            future.set_result(await _serve_one(call, item, answered, outlook))
        except Exception as exc:  # a handler's bug is this request's 500, not the batch's
            failed = _error_answer(call, item["id"], 500, "InternalError", repr(exc))
            future.set_result(failed)

    await asyncio.gather(*(run(item) for item in requests))
    responses = [answered[item["id"]].result() for item in requests]
    # Graph answers in any order: so does the emulator, reproducibly for a seed.
    random.Random(f"{state.faults.config.seed}/{state.stats.batches}").shuffle(responses)
    return Answer(200, {"responses": responses})


def _is_outlook(url: str) -> bool:
    """A request Outlook serves: `/users/{id}/events…` or `/users/{id}/calendar…`."""
    return url.lstrip("/").split("?", 1)[0].split("/")[2:3] in (["events"], ["calendar"])


async def _serve_one(
    outer: GraphCall,
    item: dict[str, Any],
    answered: dict[str, asyncio.Future[dict[str, Any]]],
    outlook: asyncio.Semaphore,
) -> dict[str, Any]:
    request_id = item["id"]
    for dependency in item.get("dependsOn", []):
        before = await answered[dependency]
        if not 200 <= before["status"] < 300:
            return _error_answer(
                outer,
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
            outer, request_id, 400, "BadRequest", "Invalid method or non-relative url."
        )
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        return _error_answer(
            outer, request_id, 400, "BadRequest", "'headers' must map names to strings."
        )
    if "body" in item and not any(k.lower() == "content-type" for k in headers):
        return _error_answer(
            outer,
            request_id,
            400,
            "BadRequest",
            "Content-Type header must be specified when a request body is present.",
        )
    path, _, query = url.lstrip("/").partition("?")
    if path.split("/", 1)[0].lower() == "$batch":
        return _error_answer(outer, request_id, 400, "BadRequest", "Nested batch.")
    forwarded = {k.lower(): v for k, v in headers.items()}
    authorization = outer.headers.get("authorization")
    if authorization is not None:
        forwarded.setdefault("authorization", authorization)  # the batch's token serves all
    full_path = unquote(f"/v1.0/{path}")  # as a server gives the path of a request alone
    endpoint, handler, params = graph.routes.match(method, full_path)
    own_id = str(uuid.uuid4())  # each request of a batch has its own ids, as alone
    call = GraphCall(
        state=outer.state,
        path=full_path,
        params=params,
        query=dict(parse_qsl(query, keep_blank_values=True)),
        headers=forwarded,
        parsed=item["body"] if "body" in item else NO_BODY,
        request_id=own_id,
        client_request_id=forwarded.get("client-request-id") or own_id,
    )
    if _is_outlook(path):
        async with outlook:
            status, answer_headers, body = await _dispatch(call, endpoint, handler)
    else:
        status, answer_headers, body = await _dispatch(call, endpoint, handler)
    answer: dict[str, Any] = {"id": request_id, "status": status, "headers": answer_headers}
    if body is not None:
        answer["body"] = body
    return answer


async def _dispatch(
    call: GraphCall, endpoint: str | None, handler: Handler | None
) -> tuple[int, dict[str, str], Any]:
    """One request of the batch past the front door to its handler, in process: its status,
    headers (as Graph writes them in a batch) and body (JSON, or base64 of other content)."""
    answer = await answer_call(call, endpoint, handler)
    headers = {_title(header): value for header, value in answer.headers.items()}
    body = answer.body
    if isinstance(body, bytes):
        headers["Content-Type"] = answer.media_type
        body = base64.b64encode(body).decode()
    elif body is not None:
        headers["Content-Type"] = GRAPH_CONTENT_TYPE
    ids = {"Request-Id": call.request_id, "Client-Request-Id": call.client_request_id}
    return answer.status, {**headers, **ids}, body


def _title(name: str) -> str:
    """A header's name as Graph writes it in a batch: Retry-After, Preference-Applied…"""
    return "-".join(part.capitalize() for part in name.lower().split("-"))


def _error_answer(
    outer: GraphCall, request_id: str, status: int, code: str, message: str
) -> dict[str, Any]:
    """A request's answer written by the batch itself (its ids are the batch's)."""
    return {
        "id": request_id,
        "status": status,
        "headers": {"Content-Type": "application/json"},
        "body": graph_error_body(
            code,
            message,
            now=outer.state.now(),
            request_id=outer.request_id,
            client_request_id=outer.client_request_id,
        ),
    }
