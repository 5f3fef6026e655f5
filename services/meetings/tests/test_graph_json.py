"""Graph's JSON read and written by pydantic-core (visio_meetings.graph_http, graph): the same
values as the `json` module reads, for any JSON; the same bytes as httpx's `json=` writes, but
for how a number with a fraction is spelt (1e-05 or 0.00001: the same value, read back)."""

from __future__ import annotations

import json
from typing import Any

import httpx
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic_core import to_json
from visio_meetings.graph_http import batch_replies, reply_of

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),  # any character, escapes and astral ones included
)


def _json(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
        max_leaves=30,
    )


_JSON = _json(_SCALARS)
_JSON_WITHOUT_FRACTIONS = _json(_SCALARS.filter(lambda value: not isinstance(value, float)))


@hypothesis_settings(max_examples=400, deadline=None)
@given(value=_JSON, ascii_only=st.booleans())
def test_an_answer_is_read_as_the_json_module_reads_it(value: Any, ascii_only: bool) -> None:
    content = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert reply_of(httpx.Response(200, content=content)).body == json.loads(content)


@hypothesis_settings(max_examples=400, deadline=None)
@given(value=_JSON_WITHOUT_FRACTIONS, fractions=_JSON)
def test_a_batch_is_written_as_httpx_writes_json(value: Any, fractions: Any) -> None:
    body = {"requests": [{"id": "0", "method": "POST", "url": "/x", "body": value}]}
    assert to_json(body) == httpx.Request("POST", "https://graph", json=body).content
    assert json.loads(to_json(fractions)) == fractions


def test_an_answer_that_is_not_json_has_no_body() -> None:
    assert reply_of(httpx.Response(502, content=b"<html>bad gateway</html>")).body is None
    assert reply_of(httpx.Response(204)).body is None
    answers = {"responses": [{"id": "0", "status": 201, "body": {"id": "é"}}]}
    content = json.dumps(answers).encode()
    [reply] = batch_replies(httpx.Response(200, content=content), 1)
    assert (reply.status, reply.body) == (201, {"id": "é"})
