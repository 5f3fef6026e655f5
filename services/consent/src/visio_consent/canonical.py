"""RFC 8785 (JSON Canonicalization Scheme) bytes of a ledger record, the way its hash covers them.

`rfc8785.dumps` is pure Python: a regular expression and a write to a buffer per string, a sort
by UTF-16 encodings per object. A profile of the backlog bench put it at a sixth of consent's
CPU, in `append` and again in the announcements (`ledger.canonical_payload`). The standard
library's C encoder writes the same bytes for most values: with `sort_keys`, no whitespace and
`ensure_ascii=False`, it escapes exactly what RFC 8785 3.2.2.2 escapes (`"`, `\\`, \\b \\f \\n
\\r \\t by name, the other controls as lowercase `\\u00xx`) and nothing else. It differs on three
things only, which send a value to `rfc8785` instead (`_plain` finds them):

- numbers that are not integers (RFC 8785 writes them as ECMAScript does: `1.0` is `1`), and
  integers outside ±(2^53 − 1), which `rfc8785` refuses;
- object keys outside ASCII: RFC 8785 sorts by UTF-16 code units, Python by code points (they
  disagree past U+FFFF);
- anything but dict, list, tuple, str, int, bool and None of those exact types (a subclass may
  write itself differently), and strings that are not UTF-8 (a lone surrogate), which
  `rfc8785` refuses.

Every ledger record is of the plain kind: `tests/test_canonical.py` compares the two on values
of every shape, the strange ones included, and checks that a record takes the fast path.
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785

_INT_MAX = 2**53 - 1
_ENCODE = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
).encode


def dumps(value: Any) -> bytes:
    """The RFC 8785 bytes of `value`: those `rfc8785.dumps` writes, and its errors."""
    if _plain(value):
        try:
            return _ENCODE(value).encode("utf-8")
        except UnicodeEncodeError:
            pass  # a lone surrogate: rfc8785 says what is wrong with it
    return rfc8785.dumps(value)


def _plain(value: Any) -> bool:
    """True when the C encoder writes `value` exactly as RFC 8785 does (see the module)."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return bool(-_INT_MAX <= value <= _INT_MAX)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not key.isascii():
                return False
            if type(item) is not str and not _plain(item):  # most values are strings
                return False
        return True
    if kind is list or kind is tuple:
        return all(_plain(item) for item in value)
    return False
