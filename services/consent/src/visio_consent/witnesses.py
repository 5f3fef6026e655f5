"""What verification believes besides the database: the signed checkpoints in the file and on
the checkpoint topic, and the hashes the `ConsentRecorded` events announced on the consents
topic. A database superuser controls none of them, so each can contradict a ledger they
rewrote: the checkpoints up to the newest signed head, the announcements after it.

Both topics are read in one pass (`visio_runtime.topic_reader`), from their beginning, without
a consumer group, and BEFORE the database: every event read was published after its records
were committed, so a record an announcement names and the ledger no longer holds was removed,
never merely not yet visible.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pydantic
from visio_runtime.topic_reader import Record, read_topics
from visio_shared import AppointmentRequested, ConsentRecorded, Headers, LedgerEntry, Topics
from visio_shared.checkpoints import Checkpoint

from visio_consent.checkpoints import parse_checkpoint, read_file
from visio_consent.settings import ConsentSettings


@dataclass(frozen=True)
class Announced:
    """One ledger entry as a `ConsentRecorded` event announced it (with the record itself,
    unless the event predates that field: see `visio_consent.rebuild`)."""

    entry: LedgerEntry
    event_id: uuid.UUID
    correlation_id: uuid.UUID

    @property
    def seq(self) -> int:
        return self.entry.seq

    @property
    def hash(self) -> str:
        return self.entry.hash


@dataclass(frozen=True)
class Witnesses:
    """What was read. `topic` and `announced` are None when the topics were not read at all
    (`--no-topic`): then nothing cross-checks the file, and the report says so."""

    file_path: Path
    file: Sequence[Checkpoint]
    topic_name: str
    topic: Sequence[Checkpoint] | None
    announced: Sequence[Announced] | None
    unreadable_events: int = 0  # ConsentRecorded messages that did not parse (named in notes)


async def gather(
    settings: ConsentSettings,
    checkpoint_file: Path,
    *,
    read_topic: bool = True,
    within: float = 60.0,
) -> Witnesses:
    """Read the checkpoint file and, unless `read_topic` is False, the checkpoint topic and the
    consents topic. Raises NotACheckpoint for a line or message that is not a checkpoint, and
    the broker's errors when it cannot be reached: verification needs both."""
    topics = Topics(settings.topic_prefix)
    in_file = await asyncio.to_thread(read_file, checkpoint_file)
    if not read_topic:
        return Witnesses(checkpoint_file, in_file, topics.consent_checkpoints, None, None)
    records = await read_topics(
        settings, [topics.consent_checkpoints, topics.consents], within=within
    )
    on_topic = [
        parse_checkpoint(record.value, f"{record.topic}/{record.partition}@{record.offset}")
        for record in records
        if record.topic == topics.consent_checkpoints and record.value is not None
    ]
    announced, unreadable = _announcements(
        record for record in records if record.topic == topics.consents
    )
    return Witnesses(
        checkpoint_file, in_file, topics.consent_checkpoints, on_topic, announced, unreadable
    )


def _announcements(records: Iterable[Record]) -> tuple[list[Announced], int]:
    found: list[Announced] = []
    unreadable = 0
    for record in records:
        if _header(record, Headers.EVENT_TYPE) != "ConsentRecorded" or record.value is None:
            continue
        try:
            event = ConsentRecorded.model_validate_json(record.value)
        except pydantic.ValidationError:
            unreadable += 1
            continue
        found.extend(Announced(e, event.event_id, event.correlation_id) for e in event.entries)
    return found, unreadable


async def requested_cafs(settings: ConsentSettings, within: float = 60.0) -> dict[uuid.UUID, str]:
    """Each appointment's Caf, as its `AppointmentRequested` on the appointments topic gave it
    (what a rebuild puts back beside the chain: the ConsentRecorded events do not carry it).
    An appointment whose request is no longer on the topic is left out: its pages keep the
    national wording."""
    topics = Topics(settings.topic_prefix)
    cafs: dict[uuid.UUID, str] = {}
    for record in await read_topics(settings, [topics.appointments], within=within):
        if _header(record, Headers.EVENT_TYPE) != "AppointmentRequested" or record.value is None:
            continue
        try:
            event = AppointmentRequested.model_validate_json(record.value)
        except pydantic.ValidationError:
            continue  # not one consent could have recorded either
        cafs[event.appointment_id] = event.caf_code
    return cafs


def _header(record: Record, name: str) -> str | None:
    for key, value in record.headers or ():
        if key == name:
            return bytes(value).decode("utf-8", "replace")
    return None
