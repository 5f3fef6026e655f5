"""The emulator's JSON answers, written by pydantic-core (routes.http_response): the bytes
Starlette's JSONResponse wrote, for any JSON without fractions (those are spelt another way,
1e-05 or 0.00001, and read back the same), with the status, headers and content type."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from visio_fakes.graph_emulator.routes import Answer, http_response

_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.text()
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


@hypothesis_settings(max_examples=400, deadline=None)
@given(body=st.dictionaries(st.text(), _JSON, max_size=6), fraction=st.floats(allow_nan=False))
def test_an_answer_is_the_bytes_jsonresponse_wrote(body: dict[str, Any], fraction: float) -> None:
    headers = {"request-id": "r-1", "retry-after": "3"}
    written = http_response(Answer(429, body, headers))
    expected = JSONResponse(body, status_code=429, headers=headers)
    assert written.body == expected.body
    assert written.status_code == 429
    assert written.headers["content-type"] == expected.headers["content-type"]
    assert written.headers["retry-after"] == "3"
    if abs(fraction) != float("inf"):
        written_back = bytes(http_response(Answer(200, {"x": fraction}, {})).body)
        assert json.loads(written_back) == {"x": fraction}
