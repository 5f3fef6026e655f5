"""The API kit every service's HTTP API shares: a body read with its limit as it arrives and
then strictly, each refusal a problem+json naming what is wrong, and an error nobody foresaw
a problem+json 500 that says nothing of it — never a bare page."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from visio_runtime import problems
from visio_runtime.bodies import read_json_body

SECRET = "jeanne.dupont@example.fr"


def app() -> FastAPI:
    made = FastAPI()
    problems.install(made)

    @made.post("/echo")
    async def echo(request: Request) -> Any:
        return await read_json_body(request, limit=100)

    @made.post("/bug/{token}")
    async def bug(token: str) -> None:
        raise RuntimeError(f"550 {SECRET} refused")

    return made


@pytest.fixture
async def client() -> Any:
    transport = httpx.ASGITransport(app=app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        yield http


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b'{"a": [1, {"b": "c"}]}', 200, '"b":"c"'),
        (b"[" * 90, 400, "the body is not JSON: EOF"),
        (b"\xef\xbb\xbf{}", 400, "byte-order mark"),
        (b'{"a": 1, "a": 2}', 422, '"field":"a","message":"given more than once"'),
        (b"x" * 101, 413, "the body exceeds 100 bytes"),
    ],
)
async def test_a_body_is_read_strictly_and_refused_with_a_problem(
    client: httpx.AsyncClient, body: bytes, status: int, says: str
) -> None:
    answer = await client.post("/echo", content=body)
    assert answer.status_code == status
    assert says in answer.text
    if status != 200:
        assert answer.headers["content-type"] == "application/problem+json"


async def test_an_error_nobody_foresaw_is_a_problem_that_quotes_nothing(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    answer = await client.post("/bug/secret-link-token")
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"] == problems.PROBLEM_BASE + "internal"
    assert SECRET not in answer.text
    [line] = [r.getMessage() for r in caplog.records if r.name == "visio_runtime.problems"]
    assert line == "POST /bug/{token} failed: RuntimeError"
