"""The HTTP side of the Graph client (`visio_meetings.graph`): its TLS context, Graph's answers
read into `Reply`s (one, or each of a $batch's), and failures as `Transient` errors."""

from __future__ import annotations

import ssl

import certifi
import httpx
from pydantic_core import from_json
from visio_runtime.errors import Transient

from visio_meetings.calls import Reply
from visio_meetings.retries import retry_after
from visio_meetings.settings import MeetingsSettings


def graph_ssl_context(settings: MeetingsSettings) -> ssl.SSLContext:
    """httpx wants an SSLContext: the configured bundle, else the public roots (certifi, as
    msal's session uses; not the system store, which SSL_CERT_FILE could redirect)."""
    cafile = settings.ca_bundle if settings.ca_bundle is not None else certifi.where()
    return ssl.create_default_context(cafile=str(cafile))


def reply_of(response: httpx.Response) -> Reply:
    """The answer read (Graph writes UTF-8 JSON) by pydantic-core's parser: a $batch of twenty
    events read by `json` was a tenth of meetings' CPU in the backlog bench, three times this."""
    try:
        body = from_json(response.content) if response.content else None
    except ValueError:
        body = None
    headers = {k.lower(): v for k, v in response.headers.items()}
    return Reply(response.status_code, headers, body)


def batch_replies(response: httpx.Response, count: int) -> list[Reply]:
    """Each request's answer, paired by id (Graph answers in any order). A batch refused or
    failed as a whole is every request's answer; one without an answer is a 502."""
    whole = reply_of(response)
    if response.status_code != 200:
        return [whole] * count
    answers = whole.body.get("responses") if isinstance(whole.body, dict) else None
    by_id = {str(a.get("id")): a for a in answers or [] if isinstance(a, dict)}
    missing = Reply(502, {}, {"error": {"code": "NoAnswer", "message": "not in the batch's"}})
    replies = []
    for i in range(count):
        answer = by_id.get(str(i))
        if answer is None:
            replies.append(missing)
            continue
        headers = answer.get("headers")
        headers = headers if isinstance(headers, dict) else {}
        replies.append(
            Reply(
                int(answer.get("status", 502)),
                {str(k).lower(): str(v) for k, v in headers.items()},
                answer.get("body"),
            )
        )
    return replies


def transient(operation: str, reply: Reply) -> Transient:
    code, message = reply.error()
    return Transient(
        f"Graph {operation} {reply.status} {code}: {message} "
        f"(request-id {reply.headers.get('request-id')})",
        retry_after=retry_after(reply.headers.get("retry-after")),
        dependency="graph",
    )


def unreachable(operation: str, exc: httpx.HTTPError) -> Transient:
    if isinstance(exc, httpx.TimeoutException):
        return Transient(f"Graph {operation} timed out: {type(exc).__name__}", dependency="graph")
    return Transient(f"Graph unreachable: {type(exc).__name__}: {exc}", dependency="graph")
