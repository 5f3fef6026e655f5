"""Where signed checkpoints go and where verification reads them back: a JSON lines file (keep
it off the database host) and the checkpoint topic (a copy the database's administrators do not
control). And the `Checkpointer`, which signs a new one only when the chain verifies up to it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg
import pydantic
from visio_runtime.metrics import Metrics
from visio_runtime.topic_reader import read_topics
from visio_shared import Headers, Topics
from visio_shared.checkpoints import CHECKPOINT_EVENT_TYPE, Checkpoint
from visio_shared.publishing import Publisher

from visio_consent.settings import ConsentSettings
from visio_consent.signing import SigningKey, load_signing_key, signature_ok, trusted_keys
from visio_consent.verify import VerifyReport, verify

log = logging.getLogger(__name__)

# One key for every checkpoint: they share a partition, so the topic keeps them in order.
TOPIC_KEY = b"consent-ledger"
_EVENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:visio-rdv:consent:checkpoint")


class NotACheckpoint(ValueError):
    """A line of the checkpoint file, or a message on the topic, is not a checkpoint."""


def append_to_file(path: Path, checkpoint: Checkpoint) -> None:
    # One write of one whole line in append mode, then fsync: a crash never leaves half a
    # checkpoint, and a signed checkpoint is on disk before anyone is told it exists.
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as file:
        file.write(checkpoint.line() + "\n")
        file.flush()
        os.fsync(file.fileno())


def read_file(path: Path) -> list[Checkpoint]:
    if not path.exists():
        return []
    checkpoints = []
    with path.open(encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if line.strip():
                checkpoints.append(parse_checkpoint(line, f"{path}:{number}"))
    return checkpoints


def parse_checkpoint(text: str | bytes, where: str) -> Checkpoint:
    """One line of the file, or one message of the topic; `where` names it in the error."""
    try:
        return Checkpoint.model_validate_json(text)
    except pydantic.ValidationError as exc:
        raise NotACheckpoint(f"{where} is not a checkpoint: {exc}") from exc


async def publish(publisher: Publisher, topic: str, checkpoint: Checkpoint) -> None:
    """The same line as in the file; the headers follow the project's event conventions."""
    line = checkpoint.line()
    await publisher.publish(
        line.encode("utf-8"),
        topic,
        key=TOPIC_KEY,
        headers={
            Headers.EVENT_ID: str(uuid.uuid5(_EVENT_NAMESPACE, line)),
            Headers.EVENT_TYPE: CHECKPOINT_EVENT_TYPE,
            Headers.SCHEMA_VERSION: "1",
            Headers.CONTENT_TYPE: "application/json",
        },
    )


async def read_topic(
    settings: ConsentSettings, topic: str, timeout_s: float = 30
) -> list[Checkpoint]:
    """Every checkpoint on the topic, read from the beginning to the current end of each
    partition, without a consumer group (nothing is committed, nobody else is disturbed)."""
    records = await read_topics(settings, [topic], within=timeout_s)
    return [
        parse_checkpoint(record.value, f"{record.topic}/{record.partition}@{record.offset}")
        for record in records
        if record.value is not None
    ]


@dataclass(frozen=True)
class Outcome:
    """What `Checkpointer.take` did. `checkpoint` is the one that covers the head now: the one
    just signed (`signed`), or, when the head has not moved, the previous one (None for an
    empty ledger never signed, or when the chain does not verify, see `report`)."""

    checkpoint: Checkpoint | None
    report: VerifyReport
    signed: bool = False


class Checkpointer:
    """Signs the verified head of the chain, writes it to the file, publishes it on the topic.

    Each checkpoint is signed only after the records since the previous one verify (only those:
    the previous one vouches for the rest), so the service never signs a history that was
    tampered with under it; and only when the head moved since the previous one: a quiet
    ledger keeps its one checkpoint, instead of a new line per interval or per request saying
    the same thing.
    """

    def __init__(self, settings: ConsentSettings, topics: Topics) -> None:
        self.settings = settings
        self.topics = topics
        self.key: SigningKey | None = None
        self.last: Checkpoint | None = None
        self._lock = asyncio.Lock()

    def load_key(self) -> SigningKey:
        """Load the signing key (generating the development one if need be); fails loudly."""
        self.key = load_signing_key(self.settings, create=True)
        assert self.key is not None
        if self.key.dev:
            log.warning(
                "consent: checkpoints are signed with the DEVELOPMENT key %s; set "
                "CONSENT_CHECKPOINT_SIGNING_KEY outside development",
                self.settings.dev_signing_key_path,
            )
        return self.key

    @property
    def trusted(self) -> frozenset[str]:
        return trusted_keys(self.settings, self.key)

    async def take(self, conn: asyncpg.Connection, publisher: Publisher) -> Outcome:
        key = self.key or self.load_key()
        async with self._lock:
            previous = self.last or await asyncio.to_thread(self._last_in_file)
            self.last = previous  # what /metrics reports until the next one is signed
            report = await verify(conn, since=previous)
            if not report.ok:
                log.error(
                    "consent: no checkpoint signed, the ledger does not verify: %s",
                    report.describe(),
                )
                return Outcome(None, report)
            if report.head_seq == (previous.seq if previous else 0):
                return Outcome(previous, report)
            checkpoint = key.sign(report.head_seq, report.head_hash)
            await asyncio.to_thread(append_to_file, self.settings.checkpoints_path, checkpoint)
            await publish(publisher, self.topics.consent_checkpoints, checkpoint)
            self.last = checkpoint
            log.info("consent: checkpoint signed at seq %s", checkpoint.seq)
            return Outcome(checkpoint, report, signed=True)

    def latest(self) -> Checkpoint | None:
        """The latest checkpoint this service signed (what the person's export cites)."""
        return self.last or self._last_in_file()

    def _last_in_file(self) -> Checkpoint | None:
        trusted = self.trusted
        mine = [cp for cp in read_file(self.settings.checkpoints_path) if signature_ok(cp, trusted)]
        return max(mine, key=lambda checkpoint: checkpoint.seq, default=None)

    async def take_on(self, pool: asyncpg.Pool, publisher: Publisher) -> None:
        """One round of the schedule (`Runtime.run_every`, each interval): a checkpoint if the
        ledger has grown since the last."""
        async with pool.acquire() as conn:
            await self.take(conn, publisher)


class CheckpointGauges:
    """What /metrics says of the signed checkpoints, for the `ConsentCheckpointOverdue` rule
    (deploy/prometheus): records past the last checkpoint are not yet protected by a signature;
    if no checkpoint comes for several intervals, the checkpointer is failing (see its log)."""

    def __init__(self, metrics: Metrics, interval_s: float) -> None:
        self.seq = metrics.gauge(
            "consent_checkpoint_seq",
            "Ledger records vouched for by the last signed checkpoint; the ledger's head past "
            "it is not yet protected by a signature.",
        )
        self.signed_at = metrics.gauge(
            "consent_checkpoint_timestamp_seconds",
            "When the last checkpoint was signed (Unix time; 0: none yet).",
        )
        metrics.gauge(
            "consent_checkpoint_interval_seconds",
            "CONSENT_CHECKPOINT_INTERVAL_S: how often a checkpoint is signed when the ledger "
            "has grown.",
        ).set(interval_s)

    def measure(self, last: Checkpoint | None) -> None:
        self.seq.set(last.seq if last else 0)
        self.signed_at.set(datetime.fromisoformat(last.signed_at).timestamp() if last else 0)
