"""Hostile Kafka records for every topic a service reads, what each consumer group must do with
each of them, and the check that it did: every partition's lag back at zero, every record that
cannot be read matched one by one to its dead letter (in whichever service's dead-letter topic)
or, on booking's inbound topic, to its reply.

A group dead-letters a record it cannot read: its event type cannot be told (no header, a value
that is not JSON, an event_type that is no type's name), or it is a type the group handles and
the value is not that event. A type it does not handle is skipped. On `booking-requests.v1`
every record that names a request is answered, and only one that names none is dead-lettered.

`visio-rdv proof inputs` runs it against the whole stack; the tests run it against one
consumer, sound or broken on purpose, to show that the check sees the difference.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from visio_runtime.settings import ServiceSettings
from visio_runtime.topic_reader import producer, read_topics
from visio_shared import Headers, Topics
from visio_shared.booking_requests import REQUEST_ID_HEADER

from visio_deploy.ops import dlq
from visio_deploy.ops.topics import LagRow, lag_report
from visio_deploy.ops.topology import Subscription
from visio_deploy.proof.report import Report
from visio_deploy.stack import LOCAL_PARTNERS

# The event type of each internal stream a hostile record claims to be, when it claims one.
CLAIMED = {
    "appointments": "AppointmentRequested",
    "meetings": "MeetingFailed",
    "notifications": "NotificationSent",
    "consents": "RecordingConsentWithdrawn",
}
DEEP = b"[" * 1_000
DEEP_OBJECT = b'{"a":' * 3_000 + b"1" + b"}" * 3_000
BOM = b"\xef\xbb\xbf"
HUGE_BYTES = 300_000  # past a dead letter's 256 KiB: the letter is cut, and still written
CALLER = LOCAL_PARTNERS[0]  # caf-portal: the hostile partner, beside the proof's bookings

Letter = tuple[str, int, int, str]  # source topic, partition, offset, consumer group


@dataclass(frozen=True)
class Hostile:
    """One record, and what it claims to be: `event_type` the type a consumer routes it by
    (None: it cannot be told), `request_id` whom booking answers (inbound topic only)."""

    name: str
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]]
    event_type: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class Sent:
    record: Hostile
    partition: int
    offset: int


def internal(topic: str, claimed: str) -> list[Hostile]:
    """Records no producer of ours writes, on one of the system's own streams."""
    typed: list[tuple[str, bytes | None]] = [(Headers.EVENT_TYPE, claimed.encode())]
    event = json.dumps({"event_type": claimed}).encode()
    return [
        Hostile("nested 1,000 deep, no headers, no key", topic, None, DEEP, []),
        Hostile(
            "an object nested 3,000 deep, declared JSON",
            topic,
            b"k",
            DEEP_OBJECT,
            [(Headers.CONTENT_TYPE, b"application/json")],
        ),
        Hostile("nested 1,000 deep, typed", topic, b"k", DEEP, typed, claimed),
        Hostile(
            "a key given twice, no headers",
            topic,
            b"k",
            event[:-1] + b', "event_id": "1", "event_id": "2"}',
            [],
            claimed,
        ),
        Hostile("a byte-order mark, no headers", topic, b"k", BOM + event, [], None),
        Hostile("invalid UTF-8, no headers", topic, None, b'{"event_type": "\xc3\x28"}', [], None),
        Hostile("JSON without an event_type, no headers", topic, b"k", b'{"a": 1}', []),
        Hostile("a null value, no headers", topic, b"k", None, []),
        Hostile("a null value, typed", topic, b"k", None, typed, claimed),
        Hostile("an event_type that is not UTF-8", topic, b"k", event, [("event_type", b"\xff")]),
        Hostile("an event_type header without a value", topic, b"k", event, [("event_type", None)]),
        Hostile(
            f"{HUGE_BYTES:,} bytes, no key",
            topic,
            None,
            event[:-1] + b', "x": "' + b"x" * HUGE_BYTES + b'"}',
            [],
            claimed,
        ),
    ]


def requests(topic: str, tag: str) -> list[Hostile]:
    """Records on booking's inbound topic: those naming a request must be answered."""

    def rid(n: int) -> str:
        return f"hostile-{tag}-{n}"

    def named(n: int) -> list[tuple[str, bytes | None]]:
        return [(REQUEST_ID_HEADER, rid(n).encode())]

    twice = (
        json.dumps(
            {"request_id": rid(3), "calling_system": CALLER, "request_type": "BookAppointment"}
        )[:-1]
        + ', "calling_system": "another", "payload": {}}'
    )
    return [
        Hostile("nested 1,000 deep, request_id header", topic, b"k", DEEP, named(1), None, rid(1)),
        Hostile("nested 1,000 deep, no request_id", topic, None, DEEP, []),
        Hostile("calling_system given twice", topic, b"k", twice.encode(), [], None, rid(3)),
        Hostile("a byte-order mark", topic, b"k", BOM + b"{}", named(4), None, rid(4)),
        Hostile("invalid UTF-8", topic, b"k", b'{"x": "\xc3\x28"}', named(5), None, rid(5)),
        Hostile("not JSON, no headers", topic, None, b"\x00\xff", []),
        Hostile("a null value, no headers", topic, b"k", None, []),
        Hostile(
            f"{HUGE_BYTES:,} bytes",
            topic,
            b"k",
            b'{"x": "' + b"x" * HUGE_BYTES + b'"}',
            named(8),
            None,
            rid(8),
        ),
    ]


def battery(topics: Topics, read: Iterable[str], tag: str) -> list[Hostile]:
    """Hostile records for each of the topics `read` (the topics some service consumes)."""
    records: list[Hostile] = []
    for topic in dict.fromkeys(read):
        if topics.partner_of(topic) is not None or topic == topics.booking_requests:
            records += requests(topic, tag)
            continue
        stream = topic.removeprefix(f"{topics.prefix}.").rsplit(".", 1)[0]
        records += internal(topic, CLAIMED.get(stream, "AppointmentRequested"))
    return records


async def send(settings: ServiceSettings, records: Sequence[Hostile]) -> list[Sent]:
    sent = []
    async with producer(settings) as sender:
        for record in records:
            meta = await sender.send_and_wait(
                record.topic, record.value, key=record.key, headers=record.headers
            )
            sent.append(Sent(record, meta.partition, meta.offset))
    return sent


def expected_letters(sent: Iterable[Sent], readers: Sequence[Subscription]) -> Counter[Letter]:
    """One letter per record and per group that cannot do anything else with it."""
    expected: Counter[Letter] = Counter()
    for item in sent:
        record = item.record
        for reader in readers:
            if record.topic not in reader.topics:
                continue
            if record.request_id is not None:
                continue  # answered, not dead-lettered
            if record.event_type is not None and record.event_type not in reader.handled:
                continue  # a type this group does not handle: skipped
            expected[(record.topic, item.partition, item.offset, reader.group)] += 1
    return expected


@dataclass
class Findings:
    """What the check saw: each list must be empty for the promise to hold."""

    lagging: list[LagRow] = field(default_factory=list)
    missing_letters: list[Letter] = field(default_factory=list)
    unmatched_letters: list[str] = field(default_factory=list)
    doubled_letters: list[Letter] = field(default_factory=list)
    letters_without_reason: list[str] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)
    letters: int = 0
    replies: dict[str, dict[str, Any]] = field(default_factory=dict)

    def judge(self, report: Report) -> None:
        """Each finding as a figure the report requires to be zero."""
        for name, value in self.figures().items():
            report.zero(name, value)

    def figures(self) -> dict[str, int]:
        return {
            "partitions with lag": len(self.lagging),
            "inputs without their dead letter": len(self.missing_letters),
            "dead letters matched to no input": len(self.unmatched_letters),
            "dead letters written twice": len(self.doubled_letters),
            "dead letters without a reason": len(self.letters_without_reason),
            "requests without their reply": len(self.unanswered),
        }


async def check(
    settings: ServiceSettings,
    sent: Sequence[Sent],
    readers: Sequence[Subscription],
    within_s: float = 120.0,
) -> Findings:
    """Wait (to `within_s`) for every group to have committed every partition to its end and
    for every expected letter and reply, then say what is missing, extra or stuck. Every
    letter on the dead-letter topics must be one of `sent`'s: the run's own topics hold no
    other input."""
    expected = expected_letters(sent, readers)
    wanted = {item.record.request_id for item in sent if item.record.request_id}
    groups: dict[str, list[str]] = {}
    for reader in readers:
        groups.setdefault(reader.group, []).extend(reader.topics)
    findings = Findings()
    deadline = time.monotonic() + within_s
    while True:
        rows = await lag_report(settings, groups)
        findings.lagging = [row for row in rows if row.group in groups and row.lag > 0]
        found = await dlq.letters(settings)
        replies = await _replies(settings, wanted)
        seen = Counter(_coordinates(letter) for letter in found)
        done = not findings.lagging and seen >= expected and wanted <= set(replies)
        if done or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)  # polling interval of a wait with a deadline
    findings.letters = len(found)
    findings.replies = replies
    findings.missing_letters = sorted((expected - seen).elements())
    findings.doubled_letters = sorted(
        key for key, n in seen.items() if n > expected.get(key, 0) > 0
    )
    findings.unmatched_letters = [
        letter.id for letter in found if _coordinates(letter) not in expected
    ]
    findings.letters_without_reason = [letter.id for letter in found if not letter.reason]
    findings.unanswered = sorted(wanted - set(replies))
    return findings


def _coordinates(letter: dlq.Letter) -> Letter:
    def number(name: str) -> int:
        text = letter.header(name)
        return int(text) if text.isdigit() else -1

    return (
        letter.source_topic,
        number(Headers.DLQ_SOURCE_PARTITION),
        number(Headers.DLQ_SOURCE_OFFSET),
        letter.header(Headers.DLQ_CONSUMER_GROUP),
    )


async def replies(
    settings: ServiceSettings, wanted: set[str], within_s: float
) -> dict[str, dict[str, Any]]:
    """The replies to these request ids, once all have come (or `within_s` has passed)."""
    deadline = time.monotonic() + within_s
    while True:
        found = await _replies(settings, wanted)
        if wanted <= set(found) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(1)  # polling interval of a wait with a deadline


async def _replies(settings: ServiceSettings, wanted: set[str]) -> dict[str, dict[str, Any]]:
    """The replies to these request ids, on the local partners' reply topics."""
    if not wanted:
        return {}
    found = {}
    topics = Topics(settings.topic_prefix)
    every = [topics.partner_replies(partner) for partner in LOCAL_PARTNERS]
    for record in await read_topics(settings, every):
        reply = json.loads(record.value)
        if reply.get("request_id") in wanted:
            found[reply["request_id"]] = reply
    return found
