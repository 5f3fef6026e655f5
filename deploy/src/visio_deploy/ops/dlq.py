"""Dead letters: list them, show one, replay them to their source topic.

A replay publishes the letter's original key, value and headers (the `dlq.*` ones removed) to
the topic it came from, with `dlq.replay_of` naming the letter, then records it in a ledger: a
compacted topic keyed by the letter's coordinates, which every operator's `replay` reads first,
so a letter is replayed once whoever runs it. Every group reading the source topic sees the
replayed event again; those that handled it before skip it by its event_id, as they skip any
redelivery. A replayed event that fails again becomes a new letter, replayable in its turn.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from visio_runtime.kafka import admin_client
from visio_runtime.settings import ServiceSettings
from visio_runtime.topic_reader import Record, producer, read_topics
from visio_shared import Headers, Topics

from visio_deploy.ops.reading import headers_of
from visio_deploy.ops.topology import replays_topic

REPLAY_OF = "dlq.replay_of"
DLQ_SERVICES = ("booking", "meetings", "notifications", "consent", "alerts")


@dataclass(frozen=True)
class Letter:
    record: Record

    @property
    def id(self) -> str:
        """`<dlq topic>/<partition>/<offset>`: how a letter is named on the command line."""
        return f"{self.record.topic}/{self.record.partition}/{self.record.offset}"

    @property
    def headers(self) -> dict[str, str]:
        return headers_of(self.record)

    def header(self, name: str) -> str:
        return self.headers.get(name, "")

    @property
    def source_topic(self) -> str:
        return self.header(Headers.DLQ_SOURCE_TOPIC)

    @property
    def event_type(self) -> str:
        return self.header(Headers.EVENT_TYPE) or "?"

    @property
    def error_class(self) -> str:
        return self.header(Headers.DLQ_ERROR_CLASS)

    @property
    def reason(self) -> str:
        return self.header(Headers.DLQ_REASON)

    @property
    def truncated(self) -> bool:
        """Its value was cut to fit on the broker: it can be read, not replayed."""
        return Headers.DLQ_TRUNCATED in self.headers

    def replayable_headers(self) -> dict[str, str]:
        kept = {k: v for k, v in self.headers.items() if not k.startswith("dlq.")}
        return kept | {REPLAY_OF: self.id}


def dlq_topics(prefix: str, service: str | None = None) -> list[str]:
    topics = Topics(prefix)
    return [topics.dlq(name) for name in ([service] if service else DLQ_SERVICES)]


async def letters(settings: ServiceSettings, service: str | None = None) -> list[Letter]:
    """Every letter of every service's dead-letter topic (or of one service's), read in one
    pass: what `ops dlq list`, `ops dlq replay` and the proofs all go by."""
    records = await read_topics(settings, dlq_topics(settings.topic_prefix, service))
    return [Letter(record) for record in records]


async def find(settings: ServiceSettings, letter_id: str) -> Letter | None:
    topic, partition, offset = parse_id(letter_id)
    for record in await read_topics(settings, [topic]):
        if record.partition == partition and record.offset == offset:
            return Letter(record)
    return None


def parse_id(letter_id: str) -> tuple[str, int, int]:
    try:
        topic, partition, offset = letter_id.rsplit("/", 2)
        return topic, int(partition), int(offset)
    except ValueError:
        raise ValueError(f"{letter_id!r} is not <dlq topic>/<partition>/<offset>") from None


async def replayed(settings: ServiceSettings) -> dict[str, dict[str, str]]:
    """The ledger: letter id → what its replay recorded."""
    await ensure_ledger(settings)
    records = await read_topics(settings, [replays_topic(settings.topic_prefix)])
    # A compacted topic may still hold older copies of a key: the last one read wins.
    return {
        record.key.decode(): json.loads(record.value)
        for record in records
        if record.key is not None and record.value is not None
    }


@dataclass(frozen=True)
class Replay:
    letter: Letter
    to: str  # "<topic>/<partition>/<offset>" of the replayed message, or why it was not


async def replay(
    settings: ServiceSettings,
    select: Callable[[Letter], bool],
    dry_run: bool = False,
    *,
    by: str | None = None,
    headers: Callable[[Letter], dict[str, str]] | None = None,
) -> tuple[list[Replay], list[Letter]]:
    """Replay the selected letters not replayed before; returns (replayed, skipped: replayed
    before, or cut to fit on the broker — `Letter.truncated` — and so not the original).
    `by`: who replays, in the ledger (default: the operator's login); `headers`: more headers
    for a letter's replay (`ops heal` counts its replays there)."""
    done = await replayed(settings)
    chosen = [letter for letter in await letters(settings) if select(letter)]
    fresh = [letter for letter in chosen if letter.id not in done and not letter.truncated]
    skipped = [letter for letter in chosen if letter.id in done or letter.truncated]
    if dry_run:
        return [Replay(letter, "(dry run)") for letter in fresh], skipped
    results = []
    async with producer(settings) as sender:
        for letter in fresh:
            sent = await sender.send_and_wait(
                letter.source_topic,
                letter.record.value,
                key=letter.record.key,
                headers=[
                    (k, v.encode())
                    for k, v in (
                        letter.replayable_headers() | (headers(letter) if headers else {})
                    ).items()
                ],
            )
            to = f"{sent.topic}/{sent.partition}/{sent.offset}"
            entry = {
                "replayed_at": datetime.now(UTC).isoformat(),
                "to": to,
                "by": by or _operator(),
            }
            await sender.send_and_wait(
                replays_topic(settings.topic_prefix),
                json.dumps(entry).encode(),
                key=letter.id.encode(),
            )
            results.append(Replay(letter, to))
    return results, skipped


async def ensure_ledger(settings: ServiceSettings) -> None:
    """One partition (one order for every operator), compacted (one entry per letter kept for
    as long as the letter may be replayed)."""
    admin = admin_client(settings)
    await admin.start()
    try:
        topic = replays_topic(settings.topic_prefix)
        if topic not in await admin.list_topics():
            ledger = NewTopic(
                topic,
                num_partitions=1,
                replication_factor=settings.topic_replication_factor,
                topic_configs={"cleanup.policy": "compact"},
            )
            try:
                await admin.create_topics([ledger])
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


def _operator() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (a container without passwd entry)
        return "unknown"
