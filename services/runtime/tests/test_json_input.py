"""JSON from outside is read one strict way: every malformed document — nesting too deep for
Python's own parser, invalid UTF-8, a byte-order mark, a lone surrogate, NaN, a null record —
is refused with a reason that quotes nothing of it, and never raises anything else; keys given
twice are found wherever they are."""

from __future__ import annotations

import json

import pytest
from visio_runtime.errors import classify
from visio_runtime.json_input import MAX_DEPTH, Unreadable, duplicate_keys, read_json

SECRET = "jeanne.dupont@example.fr"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"[" * 100_000, "recursion limit exceeded"),
        (b'{"a":' * 5_000 + b"1" + b"}" * 5_000, "recursion limit exceeded"),
        (b"\xef\xbb\xbf" + json.dumps({"email": SECRET}).encode(), "byte-order mark"),
        (b'{"email": "' + SECRET.encode() + b'\xc3\x28"}', "invalid unicode"),
        (b'{"\xff": 1}', "invalid unicode"),
        (b'{"email": "\\ud800"}', "hex escape"),
        (b'{"n": NaN}', "not JSON"),
        (b'{"n": ' + b"9" * 5_000 + b"}", "number out of range"),
        (b"", "empty"),
        (b"  \n", "empty"),
        (None, "null record"),
        (b'{"email": "' + SECRET.encode() + b'"', "EOF"),
    ],
    ids=[
        "deep-arrays",
        "deep-objects",
        "byte-order-mark",
        "invalid-utf8",
        "invalid-utf8-key",
        "lone-surrogate",
        "nan",
        "huge-number",
        "empty",
        "blank",
        "null",
        "truncated",
    ],
)
def test_what_is_not_a_json_document_is_refused_with_a_reason_quoting_nothing(
    data: bytes | None, reason: str
) -> None:
    with pytest.raises(Unreadable) as refused:
        read_json(data)
    assert reason in refused.value.reason
    assert SECRET not in refused.value.reason and "jeanne" not in refused.value.reason
    assert classify(refused.value) == "poison"  # dead-lettered at once, never retried


def test_a_document_nested_to_the_limit_is_read() -> None:
    depth = MAX_DEPTH - 1
    assert read_json(b"[" * depth + b"]" * depth) is not None
    assert read_json(b'{"a": [1, {"b": "\xc3\xa9"}]}') == {"a": [1, {"b": "é"}]}


def test_keys_given_twice_are_named_by_their_path_wherever_they_are() -> None:
    data = (
        b'{"request_id": "r1", "calling_system": "portal", "calling_system": "scheduler",'
        b' "payload": {"user": {"email": "a@b.fr", "device": "computer", "email": "c@d.fr"},'
        b' "list": [{"x": 1, "x": 2}]}}'
    )
    read_json(data)  # a parser takes it, keeping the last of each
    assert duplicate_keys(data) == ["calling_system", "payload.user.email", "payload.list.0.x"]
    assert duplicate_keys(b'{"a": {"a": 1}, "b": [{"a": 1}, {"a": 2}]}') == []
