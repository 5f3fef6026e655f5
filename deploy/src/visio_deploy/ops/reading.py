"""Records as ops shows them. Reading them is `visio_runtime.topic_reader`'s (outside any
consumer group, several topics in one pass), shared with the proofs and the services."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from visio_runtime.topic_reader import Record
from visio_shared import Headers


def headers_of(record: Record) -> dict[str, str]:
    return Headers.decode(record.headers)


def when(record: Record) -> str:
    return datetime.fromtimestamp(record.timestamp / 1000, UTC).isoformat(timespec="seconds")


def describe(record: Record) -> str:
    """A record as a person reads it: where it is, when, its key and headers, its value."""
    key = record.key.decode("utf-8", "replace") if record.key is not None else "-"
    lines = [f"{record.topic} [{record.partition}] @{record.offset}  {when(record)}  key={key}"]
    lines += [f"  {name}: {value}" for name, value in sorted(headers_of(record).items())]
    lines.append(_indent(pretty(record.value)))
    return "\n".join(lines)


def pretty(value: bytes | None) -> str:
    if value is None:
        return "(no value)"
    try:
        return json.dumps(json.loads(value), indent=2, ensure_ascii=False, sort_keys=True)
    except ValueError:
        return repr(value)


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines())
