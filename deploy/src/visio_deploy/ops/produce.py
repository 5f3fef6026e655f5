"""`ops produce TOPIC`: write one record by hand — a key, headers, a value read from a file or
stdin — and say where it landed. What kcat does on Apache Kafka, on every broker the system runs
on, tansu included, with two guards kcat lacks: the topic must exist (tansu creates a misspelt
one silently, and the record would sit there unread) and the value must be JSON unless asked
otherwise (every topic of the system carries JSON)."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass

from visio_runtime.settings import ServiceSettings
from visio_runtime.topic_reader import producer, topic_partitions

from visio_deploy.ops.tail import resolve


@dataclass(frozen=True)
class Written:
    topic: str
    partition: int
    offset: int


class Refused(Exception):
    """Nothing was written, and why (said to the operator as it is)."""


def parse_headers(pairs: list[str] | None) -> list[tuple[str, bytes]]:
    """`NAME=VALUE` pairs, in the order given (a name may repeat, as Kafka allows)."""
    headers = []
    for pair in pairs or ():
        name, equals, value = pair.partition("=")
        if not equals or not name.strip():
            raise Refused(f"--header {pair!r}: write it NAME=VALUE, e.g. --header event_type=…")
        headers.append((name.strip(), value.encode()))
    return headers


def check_value(value: bytes, raw: bool) -> bytes:
    """The value as it goes on the topic: without the line end a file or a heredoc leaves
    (as kcat drops its delimiter), and JSON unless `raw`."""
    value = value.rstrip(b"\r\n")
    if not value:
        raise Refused("the value is empty; nothing written")
    if not raw:
        try:
            json.loads(value)
        except ValueError as exc:
            raise Refused(
                f"the value is not JSON ({exc}); nothing written — add --raw to send it as it is"
            ) from exc
    return value


async def produce(
    settings: ServiceSettings,
    topic: str,
    value: bytes,
    key: str | None = None,
    headers: list[tuple[str, bytes]] | None = None,
    partition: int | None = None,
) -> Written:
    """Write one record to an existing topic (or a stream's short name: `booking-requests`)."""
    known = await topic_partitions(settings)
    existing = set(known)
    name = resolve(topic, settings.topic_prefix, existing)
    if name not in existing:
        raise Refused(_no_such_topic(name, existing, settings))
    partitions = [tp.partition for tp in known[name]]
    if partition is not None and partition not in partitions:
        raise Refused(f"{name} has partitions {partitions[0]}–{partitions[-1]}, not {partition}")
    async with producer(settings) as sender:
        sent = await sender.send_and_wait(
            name,
            value,
            key=key.encode() if key is not None else None,
            headers=headers or None,
            partition=partition,
        )
    return Written(sent.topic, sent.partition, sent.offset)


def _no_such_topic(name: str, existing: set[str], settings: ServiceSettings) -> str:
    close = difflib.get_close_matches(name, sorted(existing), n=3, cutoff=0.6)
    ours = sorted(topic for topic in existing if topic.startswith(f"{settings.topic_prefix}."))
    hint = f"did you mean {' or '.join(close)}?" if close else f"topics: {', '.join(ours)}"
    return (
        f"no topic {name} on {settings.kafka_bootstrap_servers}; nothing written (the broker "
        f"could create a misspelt topic silently) — {hint}"
    )
