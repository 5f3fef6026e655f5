"""Structured logs: one JSON object per line, with the service and, while an event is handled,
its event id, type, correlation id and appointment id (and the trace id when tracing is on).

Never an email address, a name or a token. Code logs ids, not payloads; this formatter also
scrubs what slips through: an address inside an exception's text, a bearer token, and the
input pydantic echoes in a ValidationError (`input_value=…`, which would hold a person's name).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
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
)

# Libraries whose DEBUG lines quote what they carry (aiokafka logs each message it sends, SMTP
# and HTTP clients their conversations): never below INFO, whatever the service's level.
_CHATTY = ("aiokafka", "aiosmtplib", "mail.log", "msal", "httpcore", "urllib3")

# Message-IDs look like addresses; ours (@visio-rdv.caf.fr) name no one and are kept.
_EMAIL = re.compile(r"[\w.%+-]+@(?!visio-rdv\.caf\.fr(?![\w.-]))[\w-]+(?:\.[\w-]+)+")
_BEARER = re.compile(r"(?i)\bbearer\s+[\w.~+/=-]+")
_PYDANTIC_INPUT = re.compile(r"input_value=.*?(?=, input_type=)")


def scrub(text: str) -> str:
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
        context = " ".join(f"{key}={value}" for key, value in _context.get().items())
        line = super().format(record)
        return scrub(f"{line} [{context}]" if context else line)


def configure_logging(
    level: str, service: str = "", fmt: str = "json", stream: IO[str] | None = None
) -> logging.Handler:
    """Send every logger's records to one handler on the root logger. Calling it again
    replaces the handler it installed before and leaves any other (pytest's) in place."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else TextFormatter())
    handler.visio = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "visio", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    floor = max(logging.getLevelName(level.upper()), logging.INFO)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(floor)
    return handler
