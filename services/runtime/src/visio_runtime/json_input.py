"""JSON from outside, read one strict way: a Kafka value, an HTTP body, a partner's request.

`read_json` takes bytes and returns the document or raises `Unreadable` with a reason that
quotes nothing of the input (a log line may carry it). It never recurses in Python, so no input
can raise `RecursionError`: nesting deeper than `MAX_DEPTH` is refused like any other malformed
document, as are invalid UTF-8, a byte-order mark, lone surrogates, NaN and Infinity.

`duplicate_keys` names the object keys given twice. A JSON parser keeps the last of them
silently (pydantic too), so `{"calling_system": "a", …, "calling_system": "b"}` would be read as
`b` by us and perhaps as `a` by whoever checked it before: partner input is refused for it.
Internal topics skip that scan (their producers are our own models).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pydantic_core

from visio_runtime.errors import Poison

# pydantic-core's parser (jiter) refuses nesting past this depth; our contracts nest 4 deep.
MAX_DEPTH = 200
_BOM = b"\xef\xbb\xbf"


class Unreadable(Poison):
    """The bytes are not a JSON document we read. `reason` says why without quoting them."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def read_json(data: bytes | None) -> Any:
    """The JSON document `data` holds; `Unreadable` for anything else."""
    if data is None:
        raise Unreadable("no value at all (a null record)")
    if not data.strip():
        raise Unreadable("empty")
    if data.startswith(_BOM):
        raise Unreadable("not JSON: it starts with a byte-order mark (send UTF-8 without one)")
    try:
        return pydantic_core.from_json(data, allow_inf_nan=False, cache_strings=False)
    except ValueError as exc:
        # jiter's messages say what and where ("recursion limit exceeded at line 1 column
        # 202", "invalid unicode code point at …"), never the content.
        raise Unreadable(f"not JSON: {exc}") from None


class _Object(dict[str, Any]):
    """A JSON object that remembers which of its keys were given more than once."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        seen: set[str] = set()
        repeated: set[str] = set()
        for key, _ in pairs:
            (repeated if key in seen else seen).add(key)
        self.repeated = sorted(repeated)


def duplicate_keys(data: bytes) -> list[str]:
    """Dotted paths of the keys given twice in one object (`payload.user.email`), in document
    order of their objects; [] when every key is unique. Call it on bytes `read_json` accepted:
    its depth bound keeps this second parse far from Python's recursion limit."""
    return [".".join(path) for path in _repeated(json.loads(data, object_pairs_hook=_Object), [])]


def _repeated(value: Any, path: list[str]) -> Iterator[list[str]]:
    if isinstance(value, _Object):
        for key in value.repeated:
            yield [*path, key]
        for key, item in value.items():
            yield from _repeated(item, [*path, key])
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _repeated(item, [*path, str(index)])
