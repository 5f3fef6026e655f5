"""Structured logs: one JSON object per line, with the service and, while an event is handled,
its event id, type, correlation id and appointment id (and the trace id when tracing is on).

Never an email address, a name or a token. Code logs ids, not payloads; this formatter also
scrubs what slips through: an address inside an exception's text, a bearer token, and the
input pydantic echoes in a ValidationError (`input_value=…`, which would hold a person's name).

Logs stay small whatever happens: a warning or an error that repeats itself word for word (a
consumer that cannot reach the broker, a loop failing the same way) is written once per
`repeat_window_s`, and its next line says how many were held back (`repeated`).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import IO, Any

from opentelemetry import trace

# Immutable default (and each block sets a new dict): a context never sees another's fields.
_context: ContextVar[Mapping[str, str]] = ContextVar(
    "visio_log_context", default=MappingProxyType({})
)

# Extra fields worth keeping when a caller (or FastStream) passes them with `extra=`.
_EXTRA_FIELDS = (
    "event_id",
    "event_type",
    "correlation_id",
    "appointment_id",
    "topic",
    "partition",
    "offset",
    "group_id",
    "message_id",
    "repeated",
)

# Libraries whose DEBUG lines quote what they carry (aiokafka logs each message it sends, SMTP
# and HTTP clients their conversations): never below INFO, whatever the service's level.
_CHATTY = ("aiokafka", "aiosmtplib", "mail.log", "msal", "httpcore", "urllib3")
# httpx writes an INFO line for every request, with its whole URL (a query string can carry a
# signed link): our clients log the calls that matter, with their ids and timings (meetings'
# « graph batch of 20 … », one line where there were two), so httpx says only its warnings.
_WARNINGS_ONLY = ("httpx",)

# Message-IDs look like addresses; ours (@visio-rdv.caf.fr) name no one and are kept.
_EMAIL = re.compile(r"[\w.%+-]+@(?!visio-rdv\.caf\.fr(?![\w.-]))[\w-]+(?:\.[\w-]+)+")
_BEARER = re.compile(r"(?i)\bbearer\s+[\w.~+/=-]+")
_PYDANTIC_INPUT = re.compile(r"input_value=.*?(?=, input_type=)")


# What each of the three needs to match at all: one search, and most values (ids, levels,
# logger names, times) are left without running the three.
_SUSPECT = re.compile(r"@|input_value=|(?i:bearer)")


def scrub(text: str) -> str:
    if _SUSPECT.search(text) is None:
        return text
    text = _PYDANTIC_INPUT.sub("input_value=<hidden>", text)
    text = _BEARER.sub("Bearer <hidden>", text)
    return _EMAIL.sub("<email>", text)


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Add fields to every log line written inside the block (set fields only)."""
    added = {key: str(value) for key, value in fields.items() if value is not None}
    token = _context.set({**_context.get(), **added})
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.service:
            entry["service"] = self.service
        entry |= {key: getattr(record, key) for key in _EXTRA_FIELDS if hasattr(record, key)}
        entry |= _context.get()
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = format(span.trace_id, "032x")
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(
            {
                key: scrub(value) if isinstance(value, str) else value
                for key, value in entry.items()
            },
            ensure_ascii=False,
            default=str,
        )


class TextFormatter(logging.Formatter):
    """For a person at a terminal (`log_format=text`); scrubbed the same way."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        fields = dict(_context.get())
        if hasattr(record, "repeated"):
            fields["repeated"] = str(getattr(record, "repeated"))  # noqa: B009
        context = " ".join(f"{key}={value}" for key, value in fields.items())
        line = super().format(record)
        return scrub(f"{line} [{context}]" if context else line)


@dataclass
class _Seen:
    since: float  # when this line was last written
    held: int = 0  # identical lines not written since


class Repeats(logging.Filter):
    """Writes a WARNING-or-worse line once per `window_s` when it comes again and again: the
    same logger, level, message and exception. The first one after the window carries
    `repeated`, the number held back meanwhile. Remembers at most `kinds` different lines
    (the oldest forgotten first), so it cannot grow without end either."""

    def __init__(
        self,
        window_s: float = 60.0,
        kinds: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.window_s = window_s
        self.kinds = kinds
        self.clock = clock
        self._seen: OrderedDict[tuple[str, ...], _Seen] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or self.window_s <= 0:
            return True
        error = record.exc_info[1] if record.exc_info else None
        key = (
            record.name,
            record.levelname,
            record.getMessage(),
            type(error).__name__ if error else "",
            str(error) if error else "",
        )
        now = self.clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen.since < self.window_s:
            seen.held += 1
            return False
        if seen is not None and seen.held:
            setattr(record, "repeated", seen.held)  # noqa: B010 - a field of our own
        self._seen[key] = _Seen(since=now)
        self._seen.move_to_end(key)
        while len(self._seen) > self.kinds:
            self._seen.popitem(last=False)
        return True


def configure_logging(
    level: str,
    service: str = "",
    fmt: str = "json",
    stream: IO[str] | None = None,
    repeat_window_s: float = 60.0,
) -> logging.Handler:
    """Send every logger's records to one handler on the root logger, repeated lines held back
    (`Repeats`). Calling it again replaces the handler it installed before and leaves any
    other (pytest's) in place."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else TextFormatter())
    handler.addFilter(Repeats(repeat_window_s))
    handler.visio = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "visio", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    floor = max(logging.getLevelName(level.upper()), logging.INFO)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(floor)
    for name in _WARNINGS_ONLY:
        logging.getLogger(name).setLevel(max(floor, logging.WARNING))
    return handler
