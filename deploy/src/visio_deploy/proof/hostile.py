"""Hypothesis strategies for hostile bookings: a valid body bent in one or a few places —
wrong types, missing and extra fields, markup and CR/LF in text, dates in the past or in a DST
gap, impossible zones, unknown CGU versions — or raw bytes that are not JSON at all."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

from hypothesis import strategies as st

from visio_deploy.proof.bookings import booking_body

# Text a person could type, or an attacker would: markup, script, header injection, controls.
NASTY_TEXT = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "Jeanne\r\nBcc: victim@example.com",
    "Dupont\nX-Injected: yes",
    "a\rb",
    "=?utf-8?b?PHNjcmlwdD4=?=",
    "javascript:alert(1)",
    "{{ 7*7 }} {% raw %}",
    "\u202eevil\u202c",
    "nul\x00byte",
    "é" * 300,
    "&lt;b&gt; &amp;",
]
# Fragments the HTML part of an email must never carry raw (they would be markup there).
RAW_MARKUP = ("<script>alert", "<img src=x", "onerror=alert(1)>")

TEXT_PATHS = [
    ("subject",),
    ("advisor", "display_name"),
    ("user", "first_name"),
    ("user", "last_name"),
]
ALL_PATHS = [
    *TEXT_PATHS,
    ("caf_code",),
    ("advisor",),
    ("advisor", "id"),
    ("start",),
    ("duration_minutes",),
    ("timezone",),
    ("user",),
    ("user", "email"),
    ("user", "device"),
    ("consent",),
    ("consent", "cgu_version"),
    ("consent", "accepted_at"),
    ("consent", "recording_authorised"),
]
WRONG_TYPES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
    st.text(max_size=40),
)
BAD_WHEN = st.sampled_from(
    [
        "2020-01-01T10:00:00+04:00",  # past
        "2999-01-01T10:00:00+04:00",  # beyond the horizon
        "2026-03-29T02:30:00+01:00",  # Paris DST gap
        "2026-10-25T02:30:00+02:00",  # Paris DST fold
        "2026-13-45T25:61:00+04:00",
        "2026-06-01T10:00:00",  # naive
        "2026-06-01T10:00:00+25:00",
        "tomorrow",
    ]
)
BAD_ZONES = st.sampled_from(
    ["Mars/Olympus", "UTC+99", "../../etc/passwd", "", "Europe/Paris\r\n", "Indian/Reunion "]
)


def _set(body: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    target = body
    for part in path[:-1]:
        if not isinstance(target.get(part), dict):
            return
        target = target[part]
    target[path[-1]] = value


def _delete(body: dict[str, Any], path: tuple[str, ...]) -> None:
    target = body
    for part in path[:-1]:
        target = target.get(part, {})
    if isinstance(target, dict):
        target.pop(path[-1], None)


@st.composite
def hostile_body(draw: st.DrawFn) -> dict[str, Any]:
    body = booking_body(random.Random(draw(st.integers(0, 2**32))))
    body = copy.deepcopy(body)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(
            st.sampled_from(["text", "type", "missing", "extra", "when", "zone", "cgu", "dst"])
        )
        if kind == "text":
            path = draw(st.sampled_from(TEXT_PATHS))
            value = draw(st.one_of(st.sampled_from(NASTY_TEXT), st.text(max_size=250)))
            _set(body, path, value)
        elif kind == "type":
            _set(body, draw(st.sampled_from(ALL_PATHS)), draw(WRONG_TYPES))
        elif kind == "missing":
            _delete(body, draw(st.sampled_from(ALL_PATHS)))
        elif kind == "extra":
            where = draw(st.sampled_from([(), ("user",), ("consent",), ("advisor",)]))
            _set(body, (*where, draw(st.text(min_size=1, max_size=20))), draw(WRONG_TYPES))
        elif kind == "when":
            _set(
                body,
                draw(st.sampled_from([("start",), ("consent", "accepted_at")])),
                draw(BAD_WHEN),
            )
        elif kind == "zone":
            _set(body, ("timezone",), draw(BAD_ZONES))
        elif kind == "cgu":
            _set(body, ("consent", "cgu_version"), draw(st.text(max_size=12)))
        else:  # a metropolitan Caf, its start in Paris's spring-forward gap or autumn fold
            body |= {"caf_code": "075", "timezone": "Europe/Paris"}
            _set(body, ("start",), draw(BAD_WHEN))
    return body


RAW_BODIES = st.one_of(
    st.binary(max_size=200).map(lambda b: b"\xff\xfe" + b),  # never valid UTF-8
    st.just(b'{"caf_code": "974", "subject": "\xc3\x28"}'),
    st.just(b"{" * 5000),
    st.just(b"[]"),
    st.just(b"null"),
    st.integers(70_000, 200_000).map(lambda n: b'{"subject": "' + b"x" * n + b'"}'),
)


def hostile_input() -> st.SearchStrategy[tuple[str, bytes]]:
    """('json', body) mostly; ('raw', bytes) for what no JSON encoder would produce."""
    as_json = hostile_body().map(lambda b: ("json", json.dumps(b).encode()))
    raw = RAW_BODIES.map(lambda b: ("raw", b))
    return st.one_of(as_json, as_json, as_json, raw)
