"""Rebuilding records a restored ledger lost, from the `ConsentRecorded` events that carried them.

A consent database restored from last night's backup ends before records that were appended,
announced and signed since: `consent verify` names them `missing`. Each of them travelled on the
consents topic inside its `ConsentRecorded` (`LedgerEntry.payload`: the record exactly as hashed,
pseudonymous), so they can be put back with their original seq, recorded_at and prev_hash — and
the hash chain proves the bytes: a record that does not hash, after the one before it, to the
hash announced for it (and signed by any checkpoint at its seq) is not the one that was chained.

The rebuild writes every missing record or none. It refuses, writing nothing, when an announced
record past the head does not chain (an event altered on the topic, two different records
announced for one seq), when a seq between the head and the last one announced or signed was
announced by no event that carries its record (topic retention, an event older than the payload
field), or when a rebuilt hash differs from a trusted checkpoint. Beside the chain it restores
what the announcements tell: each rebuilt appointment's pseudonymous context (as migration 002
rebuilt it: the time zone unknown, so UTC; its Caf from its `AppointmentRequested`, when the
appointments topic still holds it) and the processed marks of the source events, so a
redelivered source event announces again instead of failing on the existing record. The
personal data kept beside the chain (`subjects`) never leaves the database: only a backup holds
it (docs/runbook.md).
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from visio_shared import LedgerEntry

from visio_consent.ledger import DoesNotChain, check_chain, restore
from visio_consent.signing import signature_ok
from visio_consent.witnesses import Announced, Witnesses

# What an appointment's context needs from a record.
_CONTEXT = ("appointment_id", "revision", "subject_ref", "cgu_version")


class CannotRebuild(Exception):
    """The missing records cannot all be rebuilt; nothing was written. The message says why."""


@dataclass(frozen=True)
class Rebuild:
    """What the rebuild found (and, unless it was a dry run, wrote)."""

    head_seq: int  # the ledger's head before
    entries: Sequence[LedgerEntry]  # the records put back (or to be), in seq order
    written: bool

    def describe(self) -> str:
        if not self.entries:
            return f"nothing to rebuild: no event announces a record after seq {self.head_seq}"
        first, last = self.entries[0], self.entries[-1]
        span = f"{len(self.entries)} record(s), seq {first.seq} to {last.seq}"
        if not self.written:
            return f"would rebuild {span} on top of seq {self.head_seq} (dry run: nothing written)"
        return f"rebuilt {span} on top of seq {self.head_seq}; the head is {last.hash}"


async def rebuild_from_events(
    conn: asyncpg.Connection,
    witnesses: Witnesses,
    trusted: frozenset[str],
    *,
    dry_run: bool,
    cafs: Mapping[uuid.UUID, str] | None = None,
) -> Rebuild:
    """Put back the records after the ledger's head that the announcements in `witnesses`
    carry (read from the topics), checked against the trusted checkpoints; raise CannotRebuild
    (nothing written) if they do not all chain. `cafs`: each appointment's Caf, from the
    `AppointmentRequested` events (`witnesses.requested_cafs`), put back beside the chain.
    Concurrent appends are refused by the chain head's lock and trigger: run it with the
    consent service stopped."""
    if witnesses.announced is None:
        raise CannotRebuild("the consents topic was not read: it is what the records are on")
    head = await conn.fetchrow("SELECT seq, hash FROM chain_head")
    assert head is not None, "chain_head is seeded by the migration"
    head_seq: int = head["seq"]
    chosen = _chosen(witnesses.announced, head_seq, head["hash"])
    _against_checkpoints(chosen, witnesses, trusted, head_seq)
    if dry_run or not chosen:
        return Rebuild(head_seq, [entry for entry, _ in chosen], written=False)
    async with conn.transaction():
        try:
            entries = await restore(conn, [entry for entry, _ in chosen])
        except DoesNotChain as exc:  # the head moved since it was read: another writer
            raise CannotRebuild(f"the ledger changed while rebuilding: {exc}") from exc
        await _context(conn, chosen, cafs or {})
    return Rebuild(head_seq, entries, written=True)


def _chosen(
    announced: Sequence[Announced], head_seq: int, head_hash: str
) -> list[tuple[LedgerEntry, Announced]]:
    """For each seq after the head, the one record its announcements carry, chained from the
    head; CannotRebuild if any announcement past the head does not chain or a seq has none."""
    by_seq: dict[int, list[Announced]] = defaultdict(list)
    for each in announced:
        if each.seq > head_seq:
            by_seq[each.seq].append(each)
    if not by_seq:
        return []
    chosen: list[tuple[LedgerEntry, Announced]] = []
    prev = head_hash
    for seq in range(head_seq + 1, max(by_seq) + 1):
        said = by_seq.get(seq, [])
        hashes = sorted({each.hash for each in said})
        if len(hashes) > 1:
            raise CannotRebuild(
                f"seq {seq} is announced with {len(hashes)} different hashes "
                f"({', '.join(h[:12] + '…' for h in hashes)}; events "
                f"{', '.join(str(each.event_id) for each in said)}): one of them was forged"
            )
        carrying = [each for each in said if each.entry.payload is not None]
        if not carrying:
            why = (
                "by events that do not carry its record (published before the payload field)"
                if said
                else "by no event on the topic (beyond its retention, or never published)"
            )
            raise CannotRebuild(
                f"seq {seq} is announced {why}, and seqs up to {max(by_seq)} are: the records "
                "after it cannot chain. Nothing was rebuilt"
            )
        for each in carrying:  # every copy must chain: one that does not was altered
            try:
                check_chain([each.entry], seq - 1, prev)
            except DoesNotChain as exc:
                raise CannotRebuild(
                    f"ConsentRecorded {each.event_id} is refused: {exc}. Nothing was rebuilt"
                ) from exc
        chosen.append((carrying[0].entry, carrying[0]))
        prev = hashes[0]
    return chosen


def _against_checkpoints(
    chosen: Sequence[tuple[LedgerEntry, Announced]],
    witnesses: Witnesses,
    trusted: frozenset[str],
    head_seq: int,
) -> None:
    rebuilt = {entry.seq: entry.hash for entry, _ in chosen}
    end = max(rebuilt, default=head_seq)
    for checkpoint in [*witnesses.file, *(witnesses.topic or ())]:
        if checkpoint.seq <= head_seq or not signature_ok(checkpoint, trusted):
            continue
        if checkpoint.seq > end:
            raise CannotRebuild(
                f"the checkpoint of {checkpoint.signed_at} signs seq {checkpoint.seq}, but the "
                f"events carry records up to seq {end} only: seqs {end + 1} to "
                f"{checkpoint.seq} cannot be rebuilt from the topic. Nothing was rebuilt"
            )
        if rebuilt[checkpoint.seq] != checkpoint.head_hash:
            raise CannotRebuild(
                f"the rebuilt seq {checkpoint.seq} has hash {rebuilt[checkpoint.seq]}, the "
                f"checkpoint of {checkpoint.signed_at} signed {checkpoint.head_hash}: the events "
                "do not carry the records that were signed. Nothing was rebuilt"
            )


async def _context(
    conn: asyncpg.Connection,
    chosen: Sequence[tuple[LedgerEntry, Announced]],
    cafs: Mapping[uuid.UUID, str],
) -> None:
    """What beside the chain the announcements tell: the appointments' pseudonymous context
    (the latest rebuilt record of each wins: a contact correction moved its subject_ref), with
    the Caf its request named where `cafs` has it, and the source events' processed marks."""
    latest: dict[uuid.UUID, tuple[Announced, dict[str, Any]]] = {}
    for entry, announced in chosen:
        record = _record(entry)
        if all(key in record for key in _CONTEXT):  # every kind today; skip any that is not
            latest[uuid.UUID(record["appointment_id"])] = (announced, record)
    records = [(announced, record) for announced, record in latest.values()]
    await conn.execute(
        "INSERT INTO appointments "
        "(appointment_id, correlation_id, revision, subject_ref, timezone, cgu_version, caf_code) "
        "SELECT a, c, r, s, 'UTC', v, k FROM unnest($1::uuid[], $2::uuid[], $3::int[], "
        "$4::text[], $5::text[], $6::text[]) AS t(a, c, r, s, v, k) "
        "ON CONFLICT (appointment_id) DO UPDATE SET subject_ref = excluded.subject_ref, "
        "revision = greatest(appointments.revision, excluded.revision), "
        "caf_code = coalesce(appointments.caf_code, excluded.caf_code), updated_at = now() "
        "WHERE appointments.revision <= excluded.revision",
        [uuid.UUID(record["appointment_id"]) for _, record in records],
        [announced.correlation_id for announced, _ in records],
        [record["revision"] for _, record in records],
        [record["subject_ref"] for _, record in records],
        [record["cgu_version"] for _, record in records],
        [cafs.get(uuid.UUID(record["appointment_id"])) for _, record in records],
    )
    await conn.execute(
        "INSERT INTO processed_events (event_id, event_type) "
        "SELECT DISTINCT e, 'rebuilt from ConsentRecorded' FROM unnest($1::uuid[]) AS t(e) "
        "ON CONFLICT (event_id) DO NOTHING",
        [uuid.UUID(_record(entry)["source_event_id"]) for entry, _ in chosen],
    )


def _record(entry: LedgerEntry) -> dict[str, Any]:
    assert entry.payload is not None, "only records carried are rebuilt"
    record: dict[str, Any] = json.loads(entry.payload)
    return record
