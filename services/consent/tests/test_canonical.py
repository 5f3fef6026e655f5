"""The ledger's canonical JSON (`visio_consent.canonical`) against the `rfc8785` package: the
same bytes, or the same error, for values of every shape; and the records the ledger writes
take the C encoder's path."""

from __future__ import annotations

import enum
import uuid
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st
from visio_consent import canonical
from visio_consent.ledger import iso_utc

# Keys and strings of every kind: controls, quotes, backslashes, accents, U+2028, characters
# past U+FFFF (which sort differently in UTF-16) and lone surrogates (not UTF-8).
_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=12)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=True, allow_infinity=True)
    | _TEXT
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(_TEXT, inner, max_size=5)
    ),
    max_leaves=20,
)


def _outcome(dumps: Any, value: Any) -> tuple[str, Any]:
    try:
        return "bytes", dumps(value)
    except rfc8785.CanonicalizationError as exc:
        return "refused", type(exc)
    except UnicodeEncodeError:
        return "refused", UnicodeEncodeError


@settings(max_examples=1500, deadline=None)
@given(_VALUES)
def test_the_same_bytes_or_the_same_refusal_as_rfc8785(value: Any) -> None:
    assert _outcome(canonical.dumps, value) == _outcome(rfc8785.dumps, value)


class _Kind(enum.IntEnum):
    ONE = 1


class _Name(str):
    pass


@pytest.mark.parametrize(
    "value",
    [
        {"b": 1, "a": [1.0, 2.5, -0.0, 1e21, 1e-7]},  # numbers written the ECMAScript way
        {"n": 2**53 - 1, "m": -(2**53) + 1},
        {"n": 2**53},  # refused
        {"\U0001f600": 1, "\ue000": 2},  # UTF-16 order is not code point order here
        {"é": 1, "e": 2, "z": 3},
        {"s": "\ud800"},  # a lone surrogate: refused
        {"k": _Kind.ONE, "s": _Name("x")},  # subclasses
        {"t": '\x00\x01\x1f\x7f\u2028\u2029"\\/\b\f\n\r\t«»'},
        {1: "not a string key"},
        {"u": uuid.UUID(int=1)},  # not JSON: refused
        [],
        {},
        ["", None, True, False, 0],
    ],
)
def test_the_values_it_leaves_to_rfc8785_are_written_as_rfc8785_writes_them(value: Any) -> None:
    assert _outcome(canonical.dumps, value) == _outcome(rfc8785.dumps, value)


def test_a_ledger_record_takes_the_c_encoder_and_is_still_rfc8785(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from datetime import UTC, datetime

    record = {
        "kind": "cgu_accepted",
        "appointment_id": str(uuid.uuid4()),
        "source_event_id": str(uuid.uuid4()),
        "subject_ref": "ab" * 32,
        "cgu_version": "2024-06",
        "cgu_sha256": "cd" * 32,
        "caf": "Caf de la Réunion « Saint-Denis »",
        "channel": "partner",
        "seq": 41,
        "recorded_at": iso_utc(datetime(2026, 12, 7, 23, 59, 59, 999000, tzinfo=UTC)),
        "accepted": True,
        "withdrawn_at": None,
    }
    expected = rfc8785.dumps(record)

    def refuse(value: Any) -> bytes:
        raise AssertionError("a ledger record went to rfc8785")

    monkeypatch.setattr(canonical.rfc8785, "dumps", refuse)
    assert canonical.dumps(record) == expected
